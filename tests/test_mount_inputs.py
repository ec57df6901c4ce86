"""`kvmount mount` and the standalone class store on class and secret files that once
ended in a traceback: one line naming the field, a non-zero exit, no network call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmount.kube.classes import parse_class
from kvmount.kube.errors import InvalidClass
from kvmount.kube.file_store import FileStore

DEEP = "[" * 5000 + "]" * 5000
GOOD_CLASS = (
    "kind: SecretProviderClass\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kvtest\n"
    "    tenantID: t\n    objects: 'array: []'\n"
)


def mount(tmp_path: Path, spc: str, secrets: str | None = None) -> str:
    (tmp_path / "class.yaml").write_text(spc)
    args = ["--class", str(tmp_path / "class.yaml"), "--target", str(tmp_path / "out")]
    if secrets is not None:
        (tmp_path / "secrets.yaml").write_text(secrets)
        args += ["--secrets", str(tmp_path / "secrets.yaml")]
    done = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", "mount", *args], capture_output=True, timeout=60, check=False
    )
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    return stderr


@pytest.mark.peer
@pytest.mark.parametrize(
    ("spc", "words"),
    [
        ("kind: SecretProviderClass\nspec: [1]\n", "spec must be a mapping"),
        (f"kind: SecretProviderClass\nmetadata: {DEEP}\n", "nested too deeply"),
        (
            "kind: SecretProviderClass\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kvtest\n"
            f"    useVMManagedIdentity: 'true'\n    objects: 'array: {DEEP}'\n",
            "objects: is nested too deeply",
        ),
    ],
    ids=["spec-list", "deep-metadata", "deep-objects"],
)
def test_bad_class_files(tmp_path: Path, spc: str, words: str) -> None:
    assert words in mount(tmp_path, spc)


@pytest.mark.peer
@pytest.mark.parametrize(
    ("secrets", "words"),
    [("kind: Secret\ndata: [1]\n", "data must be a mapping"), (DEEP, "nested too deeply")],
)
def test_bad_secret_files(tmp_path: Path, secrets: str, words: str) -> None:
    assert words in mount(tmp_path, GOOD_CLASS, secrets)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("kind: SecretProviderClass\nmetadata: [1]\n", "metadata must be a mapping"),
        (f"kind: SecretProviderClass\nmetadata: {DEEP}\n", "nested too deeply"),
    ],
    ids=["list", "deep"],
)
def test_the_standalone_store_refuses_bad_class_files_naming_the_field(
    tmp_path: Path, doc: str, words: str
) -> None:
    (tmp_path / "class.yaml").write_text(doc)
    with pytest.raises(InvalidClass) as caught:
        FileStore(str(tmp_path), str(tmp_path / "state")).get_class("default", "c")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ([1], "metadata must be a mapping"),
        ({"name": {"a": 1}}, "metadata.name"),
        ({"namespace": [1]}, "namespace"),
    ],
)
def test_parse_class_refuses_metadata_of_the_wrong_shape(meta: object, words: str) -> None:
    with pytest.raises(InvalidClass) as caught:
        parse_class({"metadata": meta, "spec": {"provider": "azure"}}, "SecretProviderClass x")
    assert words in str(caught.value)
