"""`kvmount validate` (and `kvmount doctor --class`) on hostile manifests: findings or one line,
never a traceback or Python's own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmount.base.yamlread import TOO_DEEP
from kvmount.cli import main

BIG = "9" * 5000  # past int()'s 4,300 digits


def _class(objects_item: str, secret_objects: str = "") -> str:
    item = "\n".join(f"          {line}" for line in objects_item.splitlines())
    return f"""apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app
spec:
  provider: azure
{secret_objects}  parameters:
    keyvaultName: my-vault
    useVMManagedIdentity: "true"
    objects: |
      array:
        - |
{item}
"""


@pytest.mark.parametrize(
    "text",
    ["[" * 50_000, "a:\n" + "".join(" " * i + "a:\n" for i in range(1, 30_000))],
    ids=["brackets", "map"],
)
def test_deep_nesting_is_the_line_mount_gives(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"kvmount validate: {path}: {TOO_DEEP}\n"
    main(["mount", "--class", str(path), "--target", str(tmp_path / "t")])
    assert capsys.readouterr().err.strip().endswith(TOO_DEEP)


def test_oversize_numbers_are_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.yaml"
    secret_objects = f"""  secretObjects:
  - secretName: db
    type: Opaque
    data:
    - objectName: db
      key: {BIG}
"""
    path.write_text(
        _class(f"objectName: db\nobjectType: secret\nobjectVersionHistory: {BIG}", secret_objects)
    )
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    [history] = [line for line in out if "objectVersionHistory" in line]
    assert "is too long for a whole number (5000 characters)" in history and BIG not in history
    [sync] = [line for line in out if "spec.secretObjects[0]:" in line]
    assert "a number of thousands of digits" in sync


def test_doctor_class_with_an_oversize_history_is_a_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(_class(f"objectName: db\nobjectType: secret\nobjectVersionHistory: {BIG}"))
    main(["doctor", "--class", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "ValueError" not in captured.out + captured.err
    assert "too long for a whole number" in captured.out + captured.err


def test_service_account_token_secret_objects_are_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token.yaml"
    secret_objects = """  secretObjects:
  - secretName: tok
    type: kubernetes.io/service-account-token
    data:
    - objectName: db
      key: token
"""
    path.write_text(_class("objectName: db\nobjectType: secret", secret_objects))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "spec.secretObjects[0]" in out and "'kubernetes.io/service-account-token' is refused" in out
