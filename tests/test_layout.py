"""The floors of ARCHITECTURE.md hold: a module imports only its own package and lower floors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kvmount"
# Top-level package or module -> its floor; higher floors build on lower ones.
FLOORS = {
    "__init__": 0,
    "flags": 0,
    "json_file": 0,
    "csi_attributes": 0,
    "malloc_arenas": 0,
    "unix_grpc": 0,
    "observability": 0,
    "proto": 0,
    "keyvault": 1,
    "volume": 1,
    "kube": 1,
    "provider_client": 1,
    "upstream_flags": 1,
    "secretsync": 2,
    "provider": 3,
    "driver": 3,
    "flexvolume": 3,
    "kms": 3,
    "validate": 3,
    "synccontroller": 3,
    "mount_command": 3,
    "doctor": 4,
    "sidecars": 4,
    "cli": 5,
}
# Generated stubs are not ours to size.
MAX_LINES = 420


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "_pb2" not in p.name)


def _top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_own_package_or_lower_floors(path: Path) -> None:
    here = path.relative_to(SRC).parts[0].removesuffix(".py")
    assert here in FLOORS, f"{here} has no floor in tests/test_layout.py and ARCHITECTURE.md"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kvmount."):
            there = _top(node.module)
            if there == here or there not in FLOORS:
                continue
            assert FLOORS[there] < FLOORS[here], f"{path.name} (floor {FLOORS[here]}) imports {node.module}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it along its seams"
