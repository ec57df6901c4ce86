"""`kvmount flexvolume <operation> ...`: kubelet's FlexVolume exec interface.

    init                      -> {"status": "Success", "capabilities": {"attach": false}}
    mount <dir> <json opts>   -> a tmpfs at <dir> holding the Key Vault objects
    unmount <dir>             -> the tmpfs at <dir> unmounted (success if none)
    install [--plugin-dir D]  -> <D>/azure~kv/kv, the launcher kubelet execs
    anything else             -> {"status": "Not supported"}

Every call writes exactly one JSON document to stdout (see ``reply``); logs
go to stderr, which the installed launcher sends to a log file. Only the
standard library is imported at module level, so that whatever fails to
import later still ends in a Failure document.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn

from kvmount.base.flags import absolute_path, positive_duration
from kvmount.flexvolume import reply

log = logging.getLogger(__name__)

_USAGE = "usage: kv init | kv mount <dir> <json options> | kv unmount <dir>"
# Operation -> number of operands it takes.
_ARITY = {"init": 0, "mount": 2, "unmount": 1}


def _exit_without_reply(status: int = 0, message: str | None = None) -> NoReturn:
    """argparse's exit, after --help or a usage error: no operation ran and the exit
    hook answers Failure, so the exit status must be non-zero too (even for --help)."""
    if message:
        sys.stderr.write(message)
    raise SystemExit(status or 1)


def prepare(parser: argparse.ArgumentParser) -> None:
    # cli calls this when the command runs, before argparse may print usage or help.
    reply.claim_stdout()
    parser.exit = _exit_without_reply  # type: ignore[method-assign]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubelet-root-dir",
        type=absolute_path,
        default=None,
        help="kubelet's --root-dir; mount targets must be real directories below it "
        "(default /var/lib/kubelet; set by `install --kubelet-root-dir`)",
    )
    parser.add_argument(
        "--mount-timeout",
        type=positive_duration,
        # kubelet waits about 2 minutes for a call: this leaves time for the token request
        # before the reads and the writes after, so kubelet gets a Failure reply, not a kill.
        default="90s",
        help="time a mount's Key Vault reads may take in all (default 90s: kubelet waits about 2 minutes "
        "for a FlexVolume call; set by `install --mount-timeout`)",
    )
    parser.add_argument("operation", nargs="?", default="", help="init, mount, unmount or install")
    parser.add_argument("operands", nargs=argparse.REMAINDER, help="the operation's arguments")


def _call(operation: str, operands: list[str], root_dir: str | None, timeout: float) -> dict[str, Any]:
    if operation == "install":
        from kvmount.flexvolume import install

        try:
            path = install.run(operands)
        except SystemExit:  # argparse has written the problem to stderr
            return reply.failure("invalid install arguments; see kvmount flexvolume install --help")
        return {"status": reply.SUCCESS, "message": f"installed {path}"}
    if operation not in _ARITY:
        return {"status": reply.NOT_SUPPORTED} if operation else reply.failure(_USAGE)
    if len(operands) != _ARITY[operation]:
        wanted = _ARITY[operation]
        return reply.failure(f"{operation} takes {wanted} arguments, got {len(operands)}; {_USAGE}")
    if operation == "init":
        return {"status": reply.SUCCESS, "capabilities": {"attach": False}}
    from kvmount.flexvolume import volume

    root = volume.kubelet_root(root_dir)
    if operation == "mount":
        volume.mount(operands[0], operands[1], root, timeout)
    else:
        volume.unmount(operands[0], root)
    return {"status": reply.SUCCESS}


def run(args: argparse.Namespace) -> int:
    reply.claim_stdout()
    try:
        from kvmount.base.logs import setup_logging
        from kvmount.keyvault import KeyVaultError

        setup_logging()
        try:
            doc = _call(args.operation, args.operands, args.kubelet_root_dir, args.mount_timeout)
        except (KeyVaultError, OSError, ValueError) as err:
            # These messages name the object, option or path, never a secret value.
            log.error("%s failed", args.operation, extra={"error": str(err)})
            doc = reply.failure(str(err))
    except Exception as err:
        log.exception("%s failed unexpectedly", args.operation)
        doc = reply.failure(f"internal error ({type(err).__name__}); see the driver log")
    reply.send(doc)
    return 1 if doc["status"] == reply.FAILURE else 0
