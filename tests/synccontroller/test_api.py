"""The SecretSync API's pure parts: upstream's sync hash and its way of setting conditions."""

from __future__ import annotations

from kvmount.kube.objects import SecretProviderClassObject
from kvmount.synccontroller import api

CREATED, UPDATED = api.ConditionType.CREATED, api.ConditionType.UPDATED
FALSE = api.ConditionStatus.FALSE
SPC_UID = "3f1f8c1e-0000-4000-8000-00000000c1a5"
SS_UID = "9a7c2d4e-0000-4000-8000-0000000055aa"


def _class(generation: int = 2) -> SecretProviderClassObject:
    return {"metadata": {"uid": SPC_UID, "generation": generation}}


def _sync(generation: int = 3, force: str = "rotate-1") -> api.SecretSync:
    return api.parse(
        {
            "metadata": {"namespace": "n", "name": "s", "uid": SS_UID, "generation": generation},
            "spec": {"forceSynchronization": force},
        }
    )


def test_sync_hash_of_a_known_secret_is_upstreams() -> None:
    """The expected value was derived outside kvmount, with Go 1.26, following upstream's
    computeCurrentStateHash (internal/controller/secretsync_controller.go at 3186f13) step by step:
    - encoding/json's Marshal of the map[string][]byte {"bar": "secret", "bin": 0xfb 0xff 0xbf,
      "empty": nil}: keys sorted, []byte as standard base64, no spaces, a nil slice as null (an empty
      file reaches upstream as nil: proto3 leaves empty bytes off the wire) ->
      {"bar":"c2VjcmV0","bin":"+/+/","empty":null} (43 bytes);
    - prefixed with its length and a colon: "43:{...}";
    - followed by the class's uid, its generation (2), the SecretSync's uid, its generation (3) and
      forceSynchronization ("rotate-1"), joined by "|";
    - PBKDF2 with HMAC-SHA512, the SecretSync's uid as the salt, 100,000 iterations, 32 bytes,
      hex-encoded after "v1:".
    A SecretSync synced by upstream's controller carries this value and is not synced again."""
    data = {"bar": b"secret", "bin": bytes([0xFB, 0xFF, 0xBF]), "empty": b""}
    spc = _class()
    assert (
        api.sync_hash(data, spc, _sync())
        == "v1:5df1110a1632c31d504fd3e7506a452ea00b147fd294debb63beeb41406db708"
    )


def test_sync_hash_changes_with_every_input() -> None:
    data = {"bar": b"secret"}
    spc = _class()
    base = api.sync_hash(data, spc, _sync())
    assert api.sync_hash({"bar": b"secreT"}, spc, _sync()) != base
    assert api.sync_hash(data, _class(3), _sync()) != base
    assert api.sync_hash(data, spc, _sync(generation=4)) != base
    assert api.sync_hash(data, spc, _sync(force="rotate-2")) != base
    assert "secret" not in base and "c2VjcmV0" not in base


def test_conditions_are_set_in_place_and_keep_their_transition_time_while_status_holds() -> None:
    start = api.initial_conditions([], 1)
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in start] == [
        ("SecretCreated", "Unknown", "SyncStarting", ""),
        ("SecretUpdated", "Unknown", "NoUpdatesAttemptedYet", ""),
    ]
    old = [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in start]
    failed = api.set_condition(old, CREATED, FALSE, api.ConditionReason.PROVIDER_ERROR, "boom", 1)
    # Updated in place: SecretCreated stays first, SecretUpdated is untouched.
    assert [c["type"] for c in failed] == ["SecretCreated", "SecretUpdated"]
    assert failed[1] == old[1]
    assert failed[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    pinned = [{**failed[0], "lastTransitionTime": "2021-01-01T00:00:00Z"}, failed[1]]
    again = api.set_condition(pinned, CREATED, FALSE, api.ConditionReason.PATCH_ERROR, "other", 2)
    assert again[0]["lastTransitionTime"] == "2021-01-01T00:00:00Z"  # same status: time kept
    assert (again[0]["reason"], again[0]["message"], again[0]["observedGeneration"]) == (
        "ControllerPatchError",
        "other",
        2,
    )
    assert [
        c["type"]
        for c in api.set_condition(
            [], UPDATED, api.ConditionStatus.TRUE, api.ConditionReason.UP_TO_DATE, "", 1
        )
    ] == ["SecretUpdated"]
