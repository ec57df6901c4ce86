"""The two CSI sidecars of upstream's driver chart, as kvmount subcommands.

Upstream's chart runs node-driver-registrar and livenessprobe next to the
driver; with these, every image of its charts can be kvmount's. Each takes
its sidecar's flag names, so the chart's rendered ``args`` work unchanged.
"""
