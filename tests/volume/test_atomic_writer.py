"""The atomic writer on a real tmpfs: path rules, modes, no-op writes, and readers under rewrites."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmount.volume import mounts
from kvmount.volume.atomic_writer import DATA_LINK, AtomicWriter, Payload, PayloadError, validate


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mount"
    target.mkdir()
    mounts.mount_tmpfs(str(target), 16 << 20)
    yield target
    mounts.unmount(str(target))


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "empty"),
        ("/abs", "absolute"),
        ("..", "'..'"),
        ("a/../b", "'..'"),
        ("../b", "'..'"),
        ("./a", "not clean"),
        ("a//b", "not clean"),
        ("a/", "not clean"),
        ("..data", "reserved"),
        ("..x/y", "reserved"),
        ("a\x00b", "NUL"),
        (".", "the volume itself"),
    ],
)
def test_bad_paths_are_refused(path: str, rule: str) -> None:
    with pytest.raises(PayloadError, match=rule):
        validate([Payload(path, 0o644, b"")])


def test_bad_sets_are_refused() -> None:
    with pytest.raises(PayloadError, match="twice"):
        validate([Payload("a", 0o644, b""), Payload("a", 0o644, b"")])
    with pytest.raises(PayloadError, match="both a file and the directory"):
        validate([Payload("a", 0o644, b""), Payload("a/b", 0o644, b"")])
    with pytest.raises(PayloadError, match="mode"):
        validate([Payload("a", 0o4755, b"")])


def test_refused_write_leaves_volume_untouched(volume: Path) -> None:
    writer = AtomicWriter(str(volume))
    writer.write([Payload("a", 0o644, b"1")])
    before = sorted(os.listdir(volume))
    with pytest.raises(PayloadError):
        writer.write([Payload("b", 0o644, b"2"), Payload("../c", 0o644, b"3")])
    assert sorted(os.listdir(volume)) == before
    assert (volume / "a").read_bytes() == b"1"


def test_modes_nested_files_and_group(volume: Path) -> None:
    AtomicWriter(str(volume), gid=4321).write(
        [Payload("a", 0o600, b"A"), Payload("dir/sub/b", 0o440, b"B"), Payload("c", 0o755, b"")]
    )
    assert stat.S_IMODE(os.stat(volume / "a").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(volume / "dir" / "sub" / "b").st_mode) == 0o440
    assert stat.S_IMODE(os.stat(volume / "c").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(volume / "dir" / "sub").st_mode) == 0o755
    assert os.stat(volume / "dir" / "sub" / "b").st_gid == 4321
    assert (volume / "dir" / "sub" / "b").read_bytes() == b"B"
    assert os.readlink(volume / "dir") == f"{DATA_LINK}/dir"


def test_unchanged_content_is_not_rewritten(volume: Path) -> None:
    writer = AtomicWriter(str(volume))
    files = [Payload("a", 0o644, b"1"), Payload("b/c", 0o644, b"2")]
    assert writer.write(files) is True
    version = writer.current_version()
    assert writer.write(list(reversed(files))) is False
    assert writer.current_version() == version
    assert writer.write([Payload("a", 0o600, b"1"), Payload("b/c", 0o644, b"2")]) is True, "a mode change"
    assert writer.current_version() != version


def test_rewrite_removes_old_entries_and_versions(volume: Path) -> None:
    writer = AtomicWriter(str(volume))
    writer.write([Payload("old", 0o644, b"1"), Payload("keep", 0o644, b"1")])
    writer.write([Payload("keep", 0o644, b"2"), Payload("new", 0o644, b"2")])
    names = sorted(os.listdir(volume))
    hidden = [n for n in names if n.startswith("..") and n != DATA_LINK]
    assert hidden == [writer.current_version()]
    assert sorted(n for n in names if not n.startswith("..")) == ["keep", "new"]
    assert (volume / "keep").read_bytes() == b"2"


def test_out_of_space_keeps_the_previous_version(tmp_path: Path) -> None:
    target = tmp_path / "small"
    target.mkdir()
    mounts.mount_tmpfs(str(target), 64 << 10)
    try:
        writer = AtomicWriter(str(target))
        writer.write([Payload("a", 0o644, b"small")])
        with pytest.raises(OSError) as info:
            writer.write([Payload("a", 0o644, b"x" * (256 << 10))])
        assert info.value.errno == errno.ENOSPC
        assert (target / "a").read_bytes() == b"small"
        assert len([n for n in os.listdir(target) if n.startswith("..") and n != DATA_LINK]) == 1
    finally:
        mounts.unmount(str(target))


FILES = 8
SIZE = 20_000


def _generation(gen: int) -> list[Payload]:
    return [
        Payload(f"dir/f{k}" if k % 2 else f"f{k}", 0o644, f"{gen}:{k}:".encode().ljust(SIZE, b"x"))
        for k in range(FILES)
    ]


def _parse(data: bytes) -> int:
    assert len(data) == SIZE, f"partial file: {len(data)} bytes"
    return int(data.split(b":", 1)[0])


def test_readers_never_see_a_mixed_or_partial_set(volume: Path) -> None:
    writer = AtomicWriter(str(volume))
    writer.write(_generation(0))
    stop = threading.Event()
    snapshots: list[int] = []
    singles: list[int] = []
    errors: list[str] = []

    def read_snapshots() -> None:
        # Resolve ..data once (a directory fd), then read every file relative to it.
        while not stop.is_set():
            try:
                dir_fd = os.open(volume / DATA_LINK, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                gens = set()
                for payload in _generation(0):
                    fd = os.open(payload.path, os.O_RDONLY, dir_fd=dir_fd)
                    with os.fdopen(fd, "rb") as fh:
                        gens.add(_parse(fh.read()))
                if len(gens) != 1:
                    errors.append(f"mixed generations {sorted(gens)}")
                snapshots.append(gens.pop())
            except FileNotFoundError:
                pass  # the version was retired between open and read: a reader retries
            except AssertionError as err:
                errors.append(str(err))
            finally:
                os.close(dir_fd)

    def read_user_paths() -> None:
        # Through the user-visible names every file is always whole.
        while not stop.is_set():
            for payload in _generation(0):
                try:
                    singles.append(_parse((volume / payload.path).read_bytes()))
                except FileNotFoundError:
                    pass
                except AssertionError as err:
                    errors.append(str(err))

    readers = [threading.Thread(target=read_snapshots) for _ in range(3)]
    readers += [threading.Thread(target=read_user_paths) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for gen in range(1, 150):
            assert writer.write(_generation(gen))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[:5]
    assert len(snapshots) > 50 and len(set(snapshots)) > 5, "readers overlapped too few rewrites"
    assert len(singles) > 50
