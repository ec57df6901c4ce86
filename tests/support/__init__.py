"""What the tests share to wait, pick ports and run daemons (see each module)."""

from tests.support.ports import free_port
from tests.support.processes import Daemon, serves, start_daemon, stop_process, until_ready
from tests.support.wait import NotInTime, eventually

__all__ = [
    "Daemon",
    "NotInTime",
    "eventually",
    "free_port",
    "serves",
    "start_daemon",
    "stop_process",
    "until_ready",
]
