"""Installing the driver on a node: ``<plugin dir>/azure~kv/kv``, a launcher script.

The launcher needs only /bin/sh on the host: it execs a Python interpreter
that has kvmount installed. kubelet reads stdout and stderr together as the
reply, so the launcher sends stderr to a log file, and answers with a Failure
document itself when the interpreter is gone.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

from kvmount.base.flags import absolute_path, positive_duration
from kvmount.volume.target import DEFAULT_KUBELET_ROOT

DEFAULT_PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
DEFAULT_LOG_FILE = "/var/log/kvmount-flexvolume.log"
# kubelet maps flexVolume.driver "azure/kv" to <plugin dir>/azure~kv/kv.
DRIVER_DIR = "azure~kv"
DRIVER = "kv"
_MISSING = (
    '{"status":"Failure","message":"kvmount: the Python interpreter of this driver is missing; '
    're-run kvmount flexvolume install"}'
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvmount flexvolume install", description=__doc__)
    p.add_argument(
        "--plugin-dir", default=DEFAULT_PLUGIN_DIR, help="kubelet's --volume-plugin-dir (as seen here)"
    )
    p.add_argument(
        "--python",
        default=None,  # resolved at run time, so that --help and the flags reference do not vary
        help="interpreter the launcher runs, as a path on the node (default: this one)",
    )
    p.add_argument("--log-file", default=DEFAULT_LOG_FILE, help="where the driver logs, on the node")
    p.add_argument(
        "--kubelet-root-dir",
        type=absolute_path,
        default=DEFAULT_KUBELET_ROOT,
        help="kubelet's --root-dir on the node: mount targets must be real directories below it",
    )
    p.add_argument(
        "--mount-timeout",
        type=positive_duration,
        default=None,
        help="the launcher's `kvmount flexvolume --mount-timeout` (unset: that flag's default, 90s)",
    )
    return p


def launcher(python: str, log_file: str, kubelet_root: str, mount_timeout: float | None = None) -> str:
    # -I: kubelet's environment (PYTHONPATH, user site) must not change what runs.
    flags = f"--kubelet-root-dir={shlex.quote(kubelet_root)}"
    if mount_timeout is not None:
        flags += f" --mount-timeout={mount_timeout:g}s"
    return f"""#!/bin/sh
# The FlexVolume driver azure/kv, written by `kvmount flexvolume install`.
python={shlex.quote(python)}
log={shlex.quote(log_file)}
if [ ! -x "$python" ]; then
  echo '{_MISSING}'
  exit 1
fi
{{ true >>"$log"; }} 2>/dev/null || log=/dev/null
exec "$python" -I -m kvmount.cli flexvolume {flags} "$@" 2>>"$log"
"""


def install(
    plugin_dir: str,
    python: str,
    log_file: str,
    kubelet_root: str = DEFAULT_KUBELET_ROOT,
    mount_timeout: float | None = None,
) -> str:
    """Write the launcher atomically (kubelet may exec it at any moment); its path."""
    driver_dir = os.path.join(plugin_dir, DRIVER_DIR)
    os.makedirs(driver_dir, mode=0o755, exist_ok=True)
    path = os.path.join(driver_dir, DRIVER)
    fd, tmp = tempfile.mkstemp(prefix=f".{DRIVER}.", dir=driver_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(launcher(python, log_file, kubelet_root, mount_timeout))
            fh.flush()
            os.fchmod(fh.fileno(), 0o755)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(driver_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def run(argv: list[str]) -> str:
    args = parser().parse_args(argv)
    return install(
        args.plugin_dir,
        args.python or sys.executable,
        args.log_file,
        args.kubelet_root_dir,
        args.mount_timeout,
    )
