"""keyvault/__init__.py: the names code outside keyvault/ uses, each loaded on first use."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import kvmount.keyvault as keyvault

INIT = Path(keyvault.__file__)


def _type_checking_imports() -> set[str]:
    tree = ast.parse(INIT.read_text())
    [block] = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    return {a.asname or a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names}


def test_the_three_lists_agree() -> None:
    homes = {name for names in keyvault._HOMES.values() for name in names} | set(keyvault._MODULES)
    assert sorted(keyvault.__all__) == sorted(homes) == sorted(_type_checking_imports())
    assert len(keyvault.__all__) == len(set(keyvault.__all__))


@pytest.mark.parametrize("name", keyvault.__all__)
def test_each_name_is_its_home_modules(name: str) -> None:
    if name in keyvault._MODULES:
        assert getattr(keyvault, name) is importlib.import_module(
            f"kvmount.keyvault.{keyvault._MODULES[name]}"
        )
    else:
        home = importlib.import_module(f"kvmount.keyvault.{keyvault._HOME_OF[name]}")
        assert getattr(keyvault, name) is getattr(home, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'parse_mounts'"):
        _ = keyvault.parse_mounts  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from kvmount.keyvault import parse_mounts")


@pytest.mark.peer  # a fresh process
def test_validate_and_the_provider_flags_load_no_sdk() -> None:
    """What `kvmount validate` and the provider's start-up take from the front door is pure."""
    heavy = "{'azure', 'msal', 'requests', 'cryptography'}"
    probe = (
        "import sys\n"
        "from kvmount.keyvault import (Category, DEFAULT_CLOUD_ENV_DIRS, DEFAULT_MAX_OBJECTS, NMI_PORT,\n"
        "    InvalidSpec, Limits, goyaml, mount_problems, object_items, parse_mount, suggest)\n"
        "import kvmount.validate.checks, kvmount.validate.command\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
