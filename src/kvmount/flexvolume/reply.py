"""The one JSON document a FlexVolume call answers with, and nothing else on stdout.

kubelet parses the driver's whole output as a single JSON document, so one
stray line (a library's print, a warning, a usage message) fails the volume.
``claim_stdout`` therefore points fd 1 at stderr for the rest of the process
and keeps the real stdout for ``send``; if the process ends without having
sent anything (a crash, an argparse error), an exit hook sends a Failure.

Only the standard library is imported here: this runs before anything that
could fail to import.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

SUCCESS = "Success"
FAILURE = "Failure"
NOT_SUPPORTED = "Not supported"

_reply_fd: int | None = None
_sent = False


def claim_stdout() -> None:
    """From now on, fd 1 (and sys.stdout) write to stderr; only ``send`` reaches stdout."""
    global _reply_fd
    if _reply_fd is not None:
        return
    sys.stdout.flush()
    _reply_fd = os.dup(1)
    os.set_inheritable(_reply_fd, False)  # a child process must not write to kubelet's pipe
    os.dup2(2, 1)
    atexit.register(_send_if_silent)


def send(doc: dict[str, Any]) -> None:
    """Write ``doc`` as the process's only stdout output; later calls are ignored."""
    global _sent
    if _sent:
        return
    _sent = True
    data = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    fd = 1 if _reply_fd is None else _reply_fd
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def failure(message: str) -> dict[str, str]:
    return {"status": FAILURE, "message": message}


def _send_if_silent() -> None:
    send(failure("kvmount flexvolume ended without a result (bad arguments or a crash); see the driver log"))
