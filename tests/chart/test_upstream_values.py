"""A values file written for Azure's provider chart means the same in charts/kvmount.

The same file is rendered by upstream's own chart (v1.8.2, with upstream's driver
chart v1.6.0 as its `secrets-store-csi-driver` dependency) and by kvmount's; each
container's flags are read by kvmount's own argument parser, so "the same
setting" means the same parsed value, not the same spelling. A misspelled key,
which upstream ignores, fails kvmount's render with the key's name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmount.base.flags import GoFlagParser
from kvmount.driver import command as driver_command
from kvmount.provider import command as provider_command
from tests.chart.values import Doc, helm_template, template
from tests.compat.test_upstream_manifests import provider_chart
from tests.compat.upstream import DRIVER_MODULE, PROVIDER_MODULE, module_dir

# As a user of upstream's chart would write it: every value the issue names, changed from its default.
AZURE_VALUES: Doc = {
    "logVerbosity": 3,
    "logFormatJSON": True,
    "constructPEMChain": False,
    "writeCertAndKeyInSeparateFiles": True,
    "metricsAddr": "9898",
    "linux": {
        "image": {"repository": "registry.example/kvmount", "tag": "0.1.0", "pullPolicy": "Always"},
        "priorityClassName": "system-node-critical",
        "nodeSelector": {"pool": "secrets"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "secrets", "effect": "NoSchedule"}
        ],
        "resources": {
            "requests": {"cpu": "20m", "memory": "90Mi"},
            "limits": {"cpu": "300m", "memory": "300Mi"},
        },
        "customUserAgent": "team-a",
        "healthzPort": 9989,
        "healthzPath": "/health",
        "healthzTimeout": "3s",
        "providersDir": "/var/run/custom-providers",
    },
    "secrets-store-csi-driver": {
        "linux": {
            "image": {"repository": "registry.example/kvmount", "tag": "0.1.0", "pullPolicy": "Always"},
            "kubeletRootDir": "/var/lib/k8s-kubelet",
            "providersDir": "/var/run/custom-providers",
            "metricsAddr": ":8181",
            "priorityClassName": "system-node-critical",
            "nodeSelector": {"pool": "secrets"},
            "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
            "driver": {
                "resources": {
                    "requests": {"cpu": "30m", "memory": "150Mi"},
                    "limits": {"cpu": "400m", "memory": "300Mi"},
                }
            },
        },
        "enableSecretRotation": True,
        "rotationPollInterval": "30s",
        "syncSecret": {"enabled": True},
        "tokenRequests": [{"audience": "api://AzureADTokenExchange"}],
        "logVerbosity": 4,
        "logFormatJSON": True,
        "maxCallRecvMsgSize": 8388608,
        "providerHealthCheck": True,
        "providerHealthCheckInterval": "1m",
    },
}
CONTAINERS = {"secrets-store": driver_command, "provider-azure-installer": provider_command}


def find(docs: list[Doc], container_name: str) -> tuple[Doc, Doc]:
    """(pod spec, container) of the Linux DaemonSet container of that name."""
    for doc in docs:
        if doc["kind"] != "DaemonSet":
            continue
        spec = doc["spec"]["template"]["spec"]
        if spec.get("nodeSelector", {}).get("kubernetes.io/os") != "linux":
            continue
        for container in spec["containers"]:
            if container["name"] == container_name:
                return spec, container
    raise AssertionError(f"no Linux DaemonSet container {container_name!r}")


def flags(container: Doc) -> list[str]:
    """The flags a container passes: kvmount's args after the subcommand, if any."""
    args: list[str] = container.get("args", [])
    command: list[str] = container.get("command", [])
    if args and not args[0].startswith("-") and (not command or len(command) == 1):
        return args[1:]
    return args


def parsed_settings(module: Any, theirs: list[str], ours: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """For each flag upstream passes: its value as kvmount parses upstream's args, and kvmount's args."""
    parser = GoFlagParser()
    module.add_arguments(parser)
    upstream, kvmount = vars(parser.parse_args(theirs)), vars(parser.parse_args(ours))
    # Flags are matched by name (`--a=b`, `-v=3`); their parser destination names the setting.
    names = {"--" + arg.split("=", 1)[0].lstrip("-") for arg in theirs if arg.startswith("-")}
    dests = {parser._option_string_actions[name].dest for name in names}
    return {d: upstream[d] for d in dests}, {d: kvmount[d] for d in dests}


def host_paths(spec: Doc) -> set[str]:
    return {v["hostPath"]["path"].rstrip("/") for v in spec["volumes"] if "hostPath" in v}


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    """Installed objects of a kind by name (not helm hooks: upstream's CRD upgrade Jobs and their RBAC)."""
    return {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == kind and "helm.sh/hook" not in d["metadata"].get("annotations", {})
    }


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Doc], list[Doc]]:
    upstream = helm_template(AZURE_VALUES, chart=provider_chart(tmp_path_factory.mktemp("azure-chart")))
    return upstream, helm_template(AZURE_VALUES)


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_each_container_gets_the_same_settings(renders: tuple[list[Doc], list[Doc]], name: str) -> None:
    upstream, kvmount = renders
    (their_spec, theirs), (our_spec, ours) = find(upstream, name), find(kvmount, name)
    assert ours["image"] == theirs["image"] and ours["imagePullPolicy"] == theirs["imagePullPolicy"]
    expected, got = parsed_settings(CONTAINERS[name], flags(theirs), flags(ours))
    assert got == expected
    for key in ("priorityClassName", "nodeSelector", "tolerations"):
        assert our_spec.get(key) == their_spec.get(key), key
    assert ours.get("resources") == theirs.get("resources")
    assert host_paths(their_spec) <= host_paths(our_spec)
    assert ours["livenessProbe"]["httpGet"]["path"] == theirs["livenessProbe"]["httpGet"]["path"]
    ports = {p["name"]: p["containerPort"] for p in ours["ports"]}
    their_ports = {p["name"]: p["containerPort"] for p in theirs["ports"]}
    assert ports["metrics"] == int(their_ports["metrics"])


def test_the_settings_reach_the_flags_the_values_name(renders: tuple[list[Doc], list[Doc]]) -> None:
    """Not only equal to upstream: the values took effect (a chart ignoring both would pass the above)."""
    _, kvmount = renders
    _, driver = find(kvmount, "secrets-store")
    _, provider = find(kvmount, "provider-azure-installer")
    driver_args = [
        "-v=4",
        "--enable-secret-rotation=true",
        "--rotation-poll-interval=30s",
        "--metrics-addr=:8181",
        "--provider-volume=/var/run/custom-providers",
        "--kubelet-root-dir=/var/lib/k8s-kubelet",
    ]
    assert set(driver_args) <= set(driver["args"])
    provider_args = [
        "-v=3",
        "--log-format-json=true",
        "--construct-pem-chain=false",
        "--custom-user-agent=team-a",
        "--write-cert-and-key-in-separate-files=true",
        "--healthz-port=9989",
        "--prometheus-port=9898",
    ]
    assert set(provider_args) <= set(provider["args"])


def test_rbac_and_csidriver_follow_the_same_switches(renders: tuple[list[Doc], list[Doc]]) -> None:
    upstream, kvmount = renders
    assert set(by_kind(upstream, "ClusterRole")) <= set(by_kind(kvmount, "ClusterRole"))
    assert "secretprovidersyncing-role" in by_kind(kvmount, "ClusterRole")
    (theirs,), (ours,) = by_kind(upstream, "CSIDriver").values(), by_kind(kvmount, "CSIDriver").values()
    for key in ("tokenRequests", "podInfoOnMount", "attachRequired"):
        assert ours["spec"].get(key) == theirs["spec"].get(key), key
    # One rotation path: the driver's own loop, so kubelet does not re-publish (docs/rotation.md).
    assert theirs["spec"]["requiresRepublish"] is True and ours["spec"]["requiresRepublish"] is False


def test_upstreams_whole_values_files_are_accepted() -> None:
    """The values.yaml of both upstream charts, as they are, are valid kvmount values."""
    azure_chart = module_dir(*PROVIDER_MODULE) / "charts" / "csi-secrets-store-provider-azure"
    driver_chart = module_dir(*DRIVER_MODULE) / "charts" / "secrets-store-csi-driver"
    azure = yaml.safe_load((azure_chart / "values.yaml").read_text())
    driver = yaml.safe_load((driver_chart / "values.yaml").read_text())
    helm_template(azure)
    helm_template({"secrets-store-csi-driver": driver})


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ((), "constructPemChain"),
        (("linux",), "healthzport"),
        (("secrets-store-csi-driver",), "rotationPollIntervall"),
        (("secrets-store-csi-driver", "syncSecret"), "enable"),
    ],
)
def test_a_misspelled_value_fails_naming_it(tmp_path: Path, path: tuple[str, ...], key: str) -> None:
    values = copy.deepcopy(AZURE_VALUES)
    where = values
    for part in path:
        where = where[part]
    where[key] = True
    # Upstream's chart renders it and ignores it ...
    assert template(values, chart=provider_chart(tmp_path)).returncode == 0
    # ... kvmount's refuses it, naming the key and where it is.
    done = template(values)
    assert done.returncode != 0
    assert f"'{key}' not allowed" in done.stderr, done.stderr
    if path:
        assert path[-1] in done.stderr, done.stderr
