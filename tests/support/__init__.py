"""What the tests share to wait, pick ports and run daemons (see each module)."""

from tests.support import tiers
from tests.support.ci import in_ci, peer_missing
from tests.support.ports import free_port
from tests.support.processes import Daemon, serves, start_daemon, stop_process, until_ready
from tests.support.tiers import Tier, starts_process
from tests.support.wait import NotInTime, eventually

__all__ = [
    "Daemon",
    "NotInTime",
    "Tier",
    "eventually",
    "free_port",
    "in_ci",
    "peer_missing",
    "serves",
    "start_daemon",
    "starts_process",
    "stop_process",
    "tiers",
    "until_ready",
]
