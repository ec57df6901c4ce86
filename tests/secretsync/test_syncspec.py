"""secretsync/syncspec.py states the SecretSync CRD's fields and patterns once for the controller
and `kvmount validate`; these hold them equal to the CRD the chart installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kvmount.secretsync import syncspec

CRD = Path(__file__).resolve().parents[2] / "charts" / "kvmount" / "crds" / "secretsyncs.yaml"


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["group"] == syncspec.GROUP and crd["spec"]["names"]["kind"] == syncspec.KIND
    (version,) = crd["spec"]["versions"]
    assert version["name"] == syncspec.VERSION
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def test_the_fields_are_the_crds() -> None:
    spec = _schema()
    assert set(syncspec.SPEC_FIELDS) == set(spec["properties"])
    secret_object = spec["properties"]["secretObject"]
    assert set(syncspec.SECRET_OBJECT_FIELDS) == set(secret_object["properties"])
    assert set(syncspec.DATA_FIELDS) == set(secret_object["properties"]["data"]["items"]["properties"])


def test_the_patterns_and_the_reserved_key_are_the_crds() -> None:
    spec = _schema()["properties"]
    force = spec["forceSynchronization"]
    assert (force["pattern"], force["maxLength"]) == (
        syncspec.FORCE_SYNCHRONIZATION.pattern,
        syncspec.MAX_FIELD,
    )
    for field in syncspec.DATA_FIELDS:
        item = spec["secretObject"]["properties"]["data"]["items"]["properties"][field]
        assert (item["pattern"], item["maxLength"]) == (syncspec.DATA_PATH.pattern, syncspec.MAX_FIELD)
    for field in ("labels", "annotations"):
        rules = [r["rule"] for r in spec["secretObject"]["properties"][field]["x-kubernetes-validations"]]
        assert f"x.startsWith('{syncspec.RESERVED_KEY}') == false" in " ".join(rules)
    assert syncspec.crd_reserved({f"{syncspec.RESERVED_KEY}/x": "", "team": ""}) == [
        f"{syncspec.RESERVED_KEY}/x"
    ]
