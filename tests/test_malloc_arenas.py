"""The daemons run with at most two glibc malloc arenas (MALLOC_ARENA_MAX=2 from inside)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kvmount import cli
from kvmount.base import malloc_arenas

# A child that starts 12 threads which all live at once and allocate, then counts glibc's
# arenas (the <heap> elements of malloc_info): without a cap each thread gets one of its own.
CHILD = """
import ctypes, sys, tempfile, threading
from kvmount.base import malloc_arenas
if sys.argv[1] == "limit":
    assert malloc_arenas.limit()
barrier = threading.Barrier(12)
def work():
    barrier.wait()
    keep = [bytearray(1000) for _ in range(100)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(12)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
libc.fflush.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
with tempfile.TemporaryFile() as f:
    stream = libc.fdopen(f.fileno(), b"w")
    libc.malloc_info(0, stream)
    libc.fflush(stream)
    f.seek(0)
    print(f.read().count(b"<heap nr="))
"""


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.peer
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_arenas_are_capped_at_two() -> None:
    assert _arenas("default") > malloc_arenas.ARENAS, "without the cap, threads get arenas of their own"
    assert _arenas("limit") <= malloc_arenas.ARENAS


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not malloc_arenas.limit()


def test_daemons_cap_before_their_module_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []

    def limit() -> bool:
        called.append("limit")
        return True

    monkeypatch.setattr(malloc_arenas, "limit", limit)
    assert cli.main(["provider", "--version"]) == 0
    assert called == ["limit"]
    with pytest.raises(SystemExit):
        cli.main(["validate", "--help"])
    assert called == ["limit"], "a one-shot command keeps glibc's default"
