"""Turn the running Python plus a directory of installed packages into a runtime
that works from any directory on any x86-64/arm64 Linux: the image's
/opt/kvmount, which the FlexVolume installer also copies onto nodes that have no
Python (see charts/kvmount/templates/flexvolume-installer.yaml).

Relocatable because:
- the interpreter is started by its own dynamic loader with --library-path, so
  libc, libssl, libffi, ... come from lib/ld/ here, never from the host;
- a ``python3.X._pth`` file beside the interpreter fixes sys.path relative to
  itself (Python 3.11+ reads ._pth files on every platform), so neither the
  distribution's site.py patches nor PYTHONHOME/PYTHONPATH matter.

Run by the Containerfile's builder stage with the base image's Python:
    python3 relocatable_python.py --packages DIR [DIR...] --prefix /opt/kvmount
It keeps only what runs: no test suites of the standard library, no Tk, IDLE,
ensurepip or static libpython; __pycache__ is rebuilt by the new interpreter.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Standard-library parts nothing in kvmount or its dependencies imports.
STDLIB_DROP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "__pycache__",
}
# Extension modules for terminals, Tk and dbm files: they would pull X11, Tk,
# ncurses and gdbm into lib/ld.
DYNLOAD_DROP = ("_tkinter", "_curses", "readline", "_dbm", "_gdbm", "nis")
# `ldd` lines: "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" and
# "/lib64/ld-linux-x86-64.so.2 (0x...)" for the loader.
LINKED = re.compile(r"^\s*(\S+) => (/\S+) \(0x[0-9a-f]+\)$")
LOADER = re.compile(r"^\s*(/\S*ld-linux\S*) \(0x[0-9a-f]+\)$")

PYTHON_WRAPPER = """#!/bin/sh
# Starts the bundled interpreter with the bundled loader and libraries, so the
# host's (or the image's) libc and libssl never matter. ${0%/*} is this directory.
lib="${0%/*}/../lib/ld"
exec "$lib/ld.so" --library-path "$lib" "${0%/*}/{python}" "$@"
"""
KVMOUNT_WRAPPER = """#!/bin/sh
exec "${0%/*}/python3" -m kvmount.cli "$@"
"""


def ignore_stdlib(directory: str, names: list[str]) -> set[str]:
    if os.path.basename(directory) == "lib-dynload":
        return {n for n in names if n.startswith(DYNLOAD_DROP)}
    top = os.path.samefile(directory, sysconfig.get_paths()["stdlib"])
    return {n for n in names if n == "__pycache__" or (top and (n in STDLIB_DROP or n.startswith("config-")))}


IMPORT_ALL = (
    "import importlib, pkgutil, kvmount\n"
    "for m in pkgutil.walk_packages(kvmount.__path__, 'kvmount.'):\n"
    "    importlib.import_module(m.name)\n"
)


def shared_objects(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink())


def link_closure(binaries: list[Path], inside: Path) -> tuple[dict[str, Path], Path]:
    """Every library the binaries load from outside `inside` (soname -> path), and the loader."""
    found: dict[str, Path] = {}
    loader: Path | None = None
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if m := LINKED.match(line):
                path = Path(m.group(2)).resolve()
                if not path.is_relative_to(inside):
                    found.setdefault(m.group(1), path)
            elif m := LOADER.match(line):
                loader = Path(m.group(1)).resolve()
            elif "not found" in line:
                # e.g. a lib-dynload module for a library the base lacks (_curses, _dbm):
                # that module fails on import, as it would in the base image.
                print(f"note: {binary.name}: {line.strip()}", file=sys.stderr)
    if loader is None:
        sys.exit("relocatable_python: no dynamic loader in ldd's output of the interpreter")
    return found, loader


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--packages", type=Path, nargs="+", required=True, help="`pip install --target` directories"
    )
    p.add_argument("--prefix", type=Path, required=True, help="where the runtime goes (empty or missing)")
    args = p.parse_args()
    prefix: Path = args.prefix
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib = prefix / "lib" / version
    bin_dir = prefix / "bin"
    ld_dir = prefix / "lib" / "ld"

    shutil.copytree(sysconfig.get_paths()["stdlib"], lib, ignore=ignore_stdlib, symlinks=False)
    for packages in args.packages:
        shutil.copytree(
            packages,
            lib / "site-packages",
            ignore=shutil.ignore_patterns("__pycache__", "bin"),
            dirs_exist_ok=True,
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(sys.executable).resolve(), bin_dir / version)

    libraries, loader = link_closure([bin_dir / version, *shared_objects(lib)], prefix)
    ld_dir.mkdir(parents=True, exist_ok=True)
    for soname, path in sorted(libraries.items()):
        shutil.copy2(path, ld_dir / soname)
    shutil.copy2(loader, ld_dir / "ld.so")

    # sys.path, relative to this file's directory; no `import site`: nothing else is searched.
    (bin_dir / f"{version}._pth").write_text(
        f"../lib/{version}.zip\n../lib/{version}\n../lib/{version}/lib-dynload\n../lib/{version}/site-packages\n"
    )
    write_script(bin_dir / "python3", PYTHON_WRAPPER.replace("{python}", version))
    write_script(bin_dir / "kvmount", KVMOUNT_WRAPPER)
    # Bytecode made by the bundled interpreter itself, once, at build time: the
    # containers run with a read-only root and could not write it. Keyed by the
    # sources' hashes, not their mtimes (which are the build's time), so that two
    # builds of one commit write the same bytes; never rechecked, as nothing in
    # the image changes its sources.
    compile_all = ["-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash", str(lib)]
    subprocess.run([str(bin_dir / "python3"), *compile_all], check=True)
    subprocess.run([str(bin_dir / "python3"), "-c", IMPORT_ALL], check=True)
    subprocess.run([str(bin_dir / "kvmount"), "--help"], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
