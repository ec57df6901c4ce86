"""The floors of ARCHITECTURE.md hold: a module imports only its own package and lower floors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kvmount"
# Top-level package or module -> its floor; higher floors build on lower ones.
FLOORS = {
    "__init__": 0,
    "base": 0,
    "proto": 0,
    "csi": 1,
    "keyvault": 2,
    "volume": 2,
    "kube": 2,
    "secretsync": 3,
    "provider": 4,
    "driver": 4,
    "flexvolume": 4,
    "kms": 4,
    "validate": 4,
    "synccontroller": 4,
    "mount": 4,
    "doctor": 5,
    "admission": 5,
    "sidecars": 5,
    "cli": 6,
}
# Packages whose __init__ is the front door: other packages import from it, never its modules.
FRONT_DOORS = {"keyvault"}
# Rooms that import nothing else of kvmount (keyvault/http: one vault over HTTP).
SEALED = ("keyvault/http",)
# Generated stubs are not ours to size.
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "_pb2" not in p.name)


def _top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_own_package_or_lower_floors(path: Path) -> None:
    here = path.relative_to(SRC).parts[0].removesuffix(".py")
    assert here in FLOORS, f"{here} has no floor in tests/test_layout.py and ARCHITECTURE.md"
    for module in _imported(path):
        there = _top(module)
        if there == here:
            continue
        assert there in FLOORS, f"{path.name} imports {module}, which has no floor"
        assert FLOORS[there] < FLOORS[here], f"{path.name} (floor {FLOORS[here]}) imports {module}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_front_doors_are_used(path: Path) -> None:
    here = path.relative_to(SRC).parts[0].removesuffix(".py")
    for module in _imported(path):
        there = _top(module)
        if there in FRONT_DOORS and there != here:
            assert module == f"kvmount.{there}", f"{path.name} imports {module}; import from kvmount.{there}"


@pytest.mark.parametrize("room", SEALED)
def test_sealed_rooms_import_only_themselves(room: str) -> None:
    own = "kvmount." + room.replace("/", ".")
    modules = sorted((SRC / room).glob("*.py"))
    assert modules, f"{room} has no modules"
    for path in modules:
        for module in _imported(path):
            assert module.startswith(own + "."), f"{room}/{path.name} imports {module}"


def _imported(path: Path) -> list[str]:
    """Every kvmount module a file imports, by ``from kvmount.x import`` or ``import kvmount.x``;
    ``from kvmount import x`` names the module ``kvmount.x``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "kvmount":
            found += [f"kvmount.{alias.name}" for alias in node.names if alias.name != "__version__"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kvmount."):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("kvmount.")]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it along its seams"
