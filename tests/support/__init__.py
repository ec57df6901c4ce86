"""What the tests share: waiting on state, ports, daemons with their logs, peers missing outside
CI, and the tiers (unit, peer, node) every test is sorted into."""

from tests.support import tiers
from tests.support.ci import peer_missing
from tests.support.ports import free_port
from tests.support.processes import Daemon, serves, start_daemon, stop_process, until_ready
from tests.support.tiers import starts_process
from tests.support.wait import NotInTime, eventually

__all__ = [
    "Daemon",
    "NotInTime",
    "eventually",
    "free_port",
    "peer_missing",
    "serves",
    "start_daemon",
    "starts_process",
    "stop_process",
    "tiers",
    "until_ready",
]
