"""The file names a mount writes, checked before any network call.

A name the file system cannot take (a NUL, a part over 255 bytes), two
objects writing one path, or a file that is also another's directory (`a`
with `a/b/c`) would otherwise fail only while the files are written, half
done, as an internal error. Each is refused up front naming the object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kvmount.keyvault.errors import InvalidSpec
from kvmount.keyvault.types import ObjectSpec

NAME_MAX = 255  # bytes in one file name (Linux NAME_MAX)


def check_owned_paths(owned: Iterable[tuple[str, str]]) -> None:
    """(file path, the object writing it) pairs: no path twice, no file under a file."""
    owners: dict[str, str] = {}
    for path, owner in owned:
        other = owners.get(path)
        if other is not None:
            raise InvalidSpec(
                owner, f"writes file {path!r}, which {other} writes too; set a distinct objectAlias"
            )
        owners[path] = owner
    for path, owner in owners.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in owners:
                raise InvalidSpec(
                    owner,
                    f"file {path!r} lies under file {parent!r}, which {owners[parent]} writes; rename one",
                )


def check_names(objects: Sequence[ObjectSpec]) -> None:
    """Names the file system (or a Key Vault URL) cannot take."""
    for spec in objects:
        where = f"object {spec.name[:64]!r}"
        if "\0" in spec.name:
            raise InvalidSpec(f"{where}.objectName", "contains a NUL character")
        for name in spec.file_names:
            for part in name.split("/"):
                if "\0" in part:
                    raise InvalidSpec(where, f"file name {name[:64]!r} contains a NUL character")
                if len(part.encode("utf-8")) > NAME_MAX:
                    raise InvalidSpec(
                        where,
                        f"file name {name[:64]!r}... has a part longer than {NAME_MAX} bytes, "
                        "the file system's limit; set a shorter objectAlias",
                    )
