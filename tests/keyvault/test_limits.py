"""Caps on a mount (history, objects, content) and file names the file system cannot take:
each refused up front with INVALID_ARGUMENT naming the field or object."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kvmount.keyvault import (
    Category,
    InvalidSpec,
    Limits,
    ObjectSpec,
    ObjectType,
    mount_problems,
    parse_mount,
)
from kvmount.keyvault.content import check_split_paths
from kvmount.keyvault.errors import AnswerTooLarge, TokenAnswerTooLarge
from kvmount.keyvault.parameters.limits import ContentBudget, TokenCap

SP = {"clientid": "app", "clientsecret": "secret"}


def attributes(*objects: dict[str, Any]) -> dict[str, str]:
    return {
        "keyvaultName": "kvtest",
        "tenantID": "tenant",
        "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
    }


def secret(name: str, **extra: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secret", **extra}


def refusal(*objects: dict[str, Any], limits: Limits | None = None) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        parse_mount(attributes(*objects), SP, limits)
    assert caught.value.category is Category.INVALID
    return caught.value


def test_a_huge_history_is_refused_before_any_path_is_listed() -> None:
    err = refusal(secret("a", objectVersionHistory=10**9))
    assert err.field == "object 'a'.objectVersionHistory"
    assert "--max-version-history" in str(err)
    # `kvmount validate` collects problems; it must not list 10^9 paths either.
    problems = mount_problems(attributes(secret("a", objectVersionHistory=2**31 - 1)), SP)
    assert [p.error.field for p in problems] == ["object 'a'.objectVersionHistory"]


def test_history_and_object_count_caps_are_the_flags_values() -> None:
    small = Limits(max_version_history=3, max_objects=4)
    parse_mount(attributes(secret("a", objectVersionHistory=3)), SP, small)
    assert "above the provider's limit of 3" in str(
        refusal(secret("a", objectVersionHistory=4), limits=small)
    )
    # Each history version counts as an object.
    parse_mount(attributes(secret("a", objectVersionHistory=3), secret("b")), SP, small)
    err = refusal(secret("a", objectVersionHistory=3), secret("b"), secret("c"), limits=small)
    assert err.field == "objects"
    assert "--max-objects-per-mount" in str(err)


def test_defaults_take_a_large_real_mount() -> None:
    many = [secret(f"s{i}") for i in range(2000)]
    assert len(parse_mount(attributes(*many, secret("h", objectVersionHistory=50)), SP).objects) == 2001


def test_content_budget_fails_when_the_content_passes_the_cap() -> None:
    budget = ContentBudget(100)
    spec = ObjectSpec("big", ObjectType.SECRET)
    budget.take(spec, 60)
    budget.take(spec, 40)
    with pytest.raises(InvalidSpec) as caught:
        budget.take(spec, 1)
    assert caught.value.field == "objects"
    assert "secret 'big'" in str(caught.value) and "--max-mount-bytes" in str(caught.value)


def test_answers_still_arriving_are_held_against_the_budget_until_they_end() -> None:
    budget = ContentBudget(100, object_limit=80)
    one, two = budget.cap(), budget.cap()
    one.add(60)
    with pytest.raises(AnswerTooLarge, match=r"limit of 100 bytes per mount \(--max-mount-bytes\)"):
        two.add(41)
    two.add(40)
    with pytest.raises(AnswerTooLarge, match=r"limit of 80 bytes per object \(--max-object-bytes\)"):
        one.add(21)
    with one, two:  # a read's end gives back what it held
        pass
    budget.take(ObjectSpec("whole", ObjectType.SECRET), 100)


@pytest.mark.parametrize(
    ("objects", "field", "words"),
    [
        ([secret("a\0b")], "object 'a\\x00b'.objectName", "NUL"),
        ([secret("a", objectAlias="x\0y")], "object 'a'", "NUL"),
        ([secret("a", objectAlias="x" * 256)], "object 'a'", "255 bytes"),
        ([secret("a", objectAlias="d/" + "é" * 128)], "object 'a'", "255 bytes"),
        ([secret("."), secret("b")], "object '.'.objectName", "names no file"),
        ([secret("a", objectAlias="..")], "object 'a'.objectAlias", "'..'"),
        ([secret("a"), secret("b", objectAlias="a/b/c")], "object 'b'", "lies under file 'a'"),
        ([secret("b", objectAlias="a/b/c"), secret("a")], "object 'b'", "lies under file 'a'"),
        ([secret("a", objectVersionHistory=2), secret("b", objectAlias="a/0/x")], "object 'b'", "lies under"),
    ],
)
def test_file_names_the_file_system_cannot_take_are_refused_naming_the_object(
    objects: list[dict[str, Any]], field: str, words: str
) -> None:
    err = refusal(*objects)
    assert err.field == field
    assert words in str(err)


def test_a_name_of_255_bytes_is_taken() -> None:
    assert parse_mount(attributes(secret("a", objectAlias="x" * 255)), SP).objects[0].file_name == "x" * 255


def test_separate_files_mode_refuses_two_objects_writing_one_key_file() -> None:
    params = parse_mount(attributes(secret("tls"), secret("other", objectAlias="tls.key")), SP)
    with pytest.raises(InvalidSpec) as caught:
        check_split_paths(params.objects)
    assert caught.value.field in ("object 'tls'", "object 'other'")
    assert "'tls.key'" in str(caught.value)
    # A key or certificate object is never split.
    check_split_paths(
        parse_mount(
            attributes({"objectName": "k", "objectType": "key"}, secret("x", objectAlias="k.key")), SP
        ).objects
    )
    # A history's versions split under the history directory, apart from each other.
    check_split_paths(parse_mount(attributes(secret("h", objectVersionHistory=3)), SP).objects)


def test_a_token_answer_is_capped_on_its_own_and_counted_afresh_after_a_reset() -> None:
    cap = TokenCap(100)
    cap.add(100)
    with pytest.raises(
        TokenAnswerTooLarge, match=r"limit of 100 bytes per token answer \(--max-token-answer-bytes\)"
    ):
        cap.add(1)
    cap.reset()  # a retry's answer
    cap.add(100)
    assert TokenAnswerTooLarge("x").category is Category.UNAUTHENTICATED
