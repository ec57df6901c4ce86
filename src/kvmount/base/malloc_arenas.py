"""At most two glibc malloc arenas in a long-running command, as MALLOC_ARENA_MAX=2 would.

glibc gives a thread that allocates while the other arenas are locked an arena of its
own, up to eight per core, and an arena keeps the pages it once used. The provider
runs up to 32 fetch threads, 16 gRPC workers and gRPC's own threads, and the driver
a similar crowd: measured (bench/RESULTS.md), two arenas left the provider 1 to 2.5 MiB
smaller after 1,000 mounts at the same mounts per second, since Python code allocates
under the GIL and threads seldom contend for an arena anyway. The cap is set from
inside, before any thread starts, so that no manifest or chart has to carry the
variable; a MALLOC_ARENA_MAX in the environment is glibc's own and wins.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit() -> bool:
    """Cap glibc's arenas unless the environment sets them; False where there is no glibc
    mallopt (musl, another libc) or it refused."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS))
