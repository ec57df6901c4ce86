"""`kvmount validate`: the corpus of broken classes gives exactly the expected findings, every
example class in README.md, docs/ and deploy/ gives none, and the provider refuses what validate reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from kvmount.cli import main
from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, SA_TOKENS
from kvmount.keyvault import TOKEN_AUDIENCE, InvalidSpec, parse_mount
from kvmount.validate.command import check_text

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"


def _located(path: Path) -> list[str]:
    found, _ = check_text(path.read_text(), str(path))
    return sorted(
        f"{one.finding.line} {one.document} {one.finding.severity} {one.finding.field}" for one in found
    )


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_corpus_gives_exactly_the_expected_findings(path: Path) -> None:
    expected = sorted(line for line in path.with_suffix(".expected").read_text().splitlines() if line)
    assert _located(path) == expected


def _example_classes() -> list[tuple[str, str]]:
    """(where, text) of every SecretProviderClass and SecretSync in README.md's and docs/'s YAML
    blocks and in deploy/."""
    examples = [
        (f"{page.relative_to(ROOT)} block {i}", block)
        for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S))
    ]
    examples += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "deploy").rglob("*.yaml"))]
    kinds = r"(?m)^kind: (SecretProviderClass|SecretSync)$"
    return [(where, text) for where, text in examples if re.search(kinds, text)]


def test_every_example_class_is_clean() -> None:
    examples = _example_classes()
    assert any(where.startswith("README.md") for where, _ in examples), "README.md shows a class"
    for where, text in examples:
        found, classes = check_text(text, where)
        assert classes >= 1, where
        assert [one.text() for one in found] == []


def test_every_identity_mode_validates_without_a_pod() -> None:
    """What the driver adds at mount time (pod, tokens of both audiences, node-publish Secret) is
    stood in for, so each identity's class is clean offline."""
    identities = [
        {"clientID": "c", "tenantId": "t"},
        {"clientID": "c", "tenantId": "t", "useAzureTokenProxy": "true"},
        {"useVMManagedIdentity": "true", "userAssignedIdentityID": "u"},
        {"usePodIdentity": "true"},
        {"tenantID": "t"},
    ]
    for extra in identities:
        params = {
            "keyvaultName": "my-vault",
            "objects": "array:\n  - |\n    objectName: a\n    objectType: key\n",
        }
        doc = {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "x"},
            "spec": {"provider": "azure", "parameters": {**params, **extra}},
        }
        found, _ = check_text(yaml.safe_dump(doc), "x.yaml")
        assert [one.text() for one in found] == [], extra


def test_suggestions_and_fixes_are_in_the_messages() -> None:
    found, _ = check_text((CORPUS / "parameters.yaml").read_text(), "parameters.yaml")
    messages = {one.finding.field: one.finding.message for one in found}
    assert "did you mean 'keyvaultName'?" in messages["spec.parameters.keyVaultName"]
    assert 'quote it: "true"' in messages["spec.parameters.useVMManagedIdentity"]
    found, _ = check_text((CORPUS / "objects.yaml").read_text(), "objects.yaml")
    assert (
        "did you mean 'objectAlias'?"
        in {one.finding.field: one.finding.message for one in found}["spec.parameters.objects[1]"]
    )


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_provider_refuses_what_validate_lists(path: Path) -> None:
    """One module: the error a mount gets is among validate's findings, and a class validate
    finds nothing provider-side in mounts."""
    found, _ = check_text(path.read_text(), str(path))
    token = json.dumps({TOKEN_AUDIENCE: {"token": "t"}})
    for number, doc in enumerate(yaml.safe_load_all(path.read_text()), start=1):
        if not isinstance(doc, dict) or doc.get("kind") != "SecretProviderClass" or "spec" not in doc:
            continue
        params = {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in doc["spec"]["parameters"].items()
        }
        attributes = {POD_NAME: "p", POD_NAMESPACE: "n", SA_TOKENS: token, **params}
        secrets = {"clientid": "c", "clientsecret": "s"}
        provider_side = [
            one.finding.message
            for one in found
            if one.document == number
            and one.finding.severity == "error"
            and one.finding.field.startswith("spec.parameters.")
            and "API server" not in one.finding.message
        ]
        if not provider_side:
            parse_mount(attributes, secrets)
            continue
        with pytest.raises(InvalidSpec) as refused:
            parse_mount(attributes, secrets)
        assert str(refused.value).removeprefix(f"{refused.value.field}: ") in provider_side


def test_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme_class = _example_classes()[0][1]
    clean = tmp_path / "clean.yaml"
    clean.write_text(readme_class)
    assert main(["validate", str(clean)]) == 0
    assert capsys.readouterr().out == ""

    assert main(["validate", "--output", "json", str(CORPUS / "identity.yaml"), str(clean)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {(r["line"], r["document"], r["severity"]) for r in report} == {
        (11, 1, "error"),
        (24, 2, "error"),
        (41, 3, "error"),
    }
    assert all(r["file"].endswith("identity.yaml") and r["field"] and r["message"] for r in report)

    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: No such file or directory" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: SecretProviderClass\nspec: [\n")
    assert main(["validate", str(broken), str(clean)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:3: not valid YAML" in err and "Traceback" not in err


def test_text_lines_name_file_document_line_field_and_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(CORPUS / "sync.yaml")]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(
        f"{CORPUS / 'sync.yaml'}:24: doc 1: error: spec.secretObjects[0].data[0].objectName: "
    )
    assert "use the object's objectAlias" in first


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO((CORPUS / "objects.yaml").read_text()))
    assert main(["validate", "-"]) == 1
    assert capsys.readouterr().out.startswith(
        "<stdin>:15: doc 1: error: spec.parameters.objects[0].objectType:"
    )
