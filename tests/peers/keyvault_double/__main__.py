"""``python -m tests.peers.keyvault_double``: the double as a process (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from tests.peers.keyvault_double.server import DoubleServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="An Azure Key Vault + Azure AD + IMDS + NMI double for tests."
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--imds-port", type=int, default=0)
    parser.add_argument("--nmi-port", type=int, default=0)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--tenant", default="tenant")
    args = parser.parse_args(argv)
    state = Path(args.state_dir)
    server = DoubleServer(state, args.port, args.imds_port, args.nmi_port, args.tenant)
    server.start()
    tmp = state / "ready.json.tmp"
    tmp.write_text(json.dumps(server.ready_info()))
    tmp.replace(state / "ready.json")  # atomic: readers never see a partial file
    stop = threading.Event()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
