"""Why a call failed: every reason has a gRPC code, the codes are the driver's, and the spellings
(metric labels) are the ones dashboards and alerts already match."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from kvmount.csi import provider_client
from kvmount.csi.provider_client import ProviderError, ProviderReason
from kvmount.driver import metrics
from kvmount.driver.request import (
    PUBLISH_CODES,
    STORE_CODES,
    PublishError,
    PublishReason,
    grpc_code,
    provider_error,
    store_error,
    target_error,
)
from kvmount.kube.errors import (
    ClassNotFound,
    InvalidClass,
    InvalidName,
    StoreError,
    StoreReason,
    StoreUnavailable,
    api_error,
)
from kvmount.kube.rest import ApiError
from kvmount.secretsync.errors import SyncReason
from kvmount.volume.target import OutsideRoot, TargetError

Code = grpc.StatusCode
TABLES: list[tuple[type[StrEnum], Mapping[Any, Code]]] = [
    (PublishReason, PUBLISH_CODES),
    (StoreReason, STORE_CODES),
    (ProviderReason, provider_client.CODES),
]


@pytest.mark.parametrize(("reasons", "table"), TABLES, ids=[r.__name__ for r, _ in TABLES])
def test_every_reason_has_a_code_in_its_boundarys_table(
    reasons: type[StrEnum], table: Mapping[Any, Code]
) -> None:
    assert set(table) == set(reasons), f"{reasons.__name__} and its table differ"
    for reason in table:
        assert grpc_code(reason) is table[reason]


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (StoreReason.CLASS_NOT_FOUND, Code.NOT_FOUND),
        (StoreReason.INVALID_CLASS, Code.FAILED_PRECONDITION),
        (StoreReason.INVALID_REQUEST, Code.INVALID_ARGUMENT),
        (StoreReason.FORBIDDEN, Code.PERMISSION_DENIED),
        (StoreReason.UNAVAILABLE, Code.UNAVAILABLE),
        (StoreReason.NODE_PUBLISH_SECRET_NOT_FOUND, Code.UNAVAILABLE),
        (StoreReason.SERVICE_ACCOUNT_NOT_FOUND, Code.UNAVAILABLE),
        (PublishReason.INVALID_REQUEST, Code.INVALID_ARGUMENT),
        (PublishReason.FAILED_TO_MOUNT, Code.INTERNAL),
        (PublishReason.INVALID_PROVIDER_FILES, Code.INTERNAL),
        (PublishReason.FILE_WRITE_ERROR, Code.INTERNAL),
        (PublishReason.INTERNAL, Code.INTERNAL),
        (ProviderReason.INVALID_PROVIDER, Code.INVALID_ARGUMENT),
        (ProviderReason.NOT_FOUND, Code.FAILED_PRECONDITION),
        (ProviderReason.UNAVAILABLE, Code.UNAVAILABLE),
        (ProviderReason.TIMEOUT, Code.DEADLINE_EXCEEDED),
        (ProviderReason.RESPONSE_TOO_LARGE, Code.RESOURCE_EXHAUSTED),
        (ProviderReason.ERROR, Code.UNKNOWN),
    ],
)
def test_a_reason_answers_its_code(reason: PublishReason | StoreReason | ProviderReason, code: Code) -> None:
    assert PublishError(reason, "why").code is code


def test_the_labels_are_spelled_as_before() -> None:
    """The error_type values dashboards match; a renamed member must not rename its label."""
    labels = {str(r) for enum in (PublishReason, StoreReason, ProviderReason, SyncReason) for r in enum}
    assert labels == {
        "InvalidRequest",
        "SecretProviderClassNotFound",
        "InvalidSecretProviderClass",
        "APIServerUnavailable",
        "APIServerForbidden",
        "NodePublishSecretNotFound",
        "ServiceAccountNotFound",
        "InvalidProvider",
        "ProviderNotFound",
        "ProviderUnavailable",
        "ProviderTimeout",
        "ProviderResponseTooLarge",
        "ProviderError",
        "InvalidProviderFiles",
        "FailedToMount",
        "FileWriteError",
        "InvalidSecretObject",
        "ObjectNotMounted",
        "SecretNotManaged",
        "SecretTypeMismatch",
        "InvalidCertificate",
        "Internal",
    }


@pytest.mark.parametrize(
    ("error", "reason", "code"),
    [
        (ClassNotFound("ns", "web", "in the API server"), "SecretProviderClassNotFound", Code.NOT_FOUND),
        (
            InvalidClass("class web", "spec is missing"),
            "InvalidSecretProviderClass",
            Code.FAILED_PRECONDITION,
        ),
        (InvalidName("namespace 'A' is invalid"), "InvalidRequest", Code.INVALID_ARGUMENT),
        (StoreUnavailable("API server unreachable"), "APIServerUnavailable", Code.UNAVAILABLE),
        (
            api_error("class web", "get", ApiError(403, "Forbidden")),
            "APIServerForbidden",
            Code.PERMISSION_DENIED,
        ),
        (api_error("class web", "get", ApiError(500, "Internal")), "APIServerUnavailable", Code.UNAVAILABLE),
    ],
)
def test_a_store_error_keeps_its_reason_and_answers_the_tables_code(
    error: Exception, reason: str, code: Code
) -> None:
    assert isinstance(error, StoreError)
    published = store_error(error, "for pod ns/web")
    assert (published.reason, published.code) == (reason, code)
    assert str(published) == f"for pod ns/web: {error}"


def test_a_provider_error_keeps_the_code_the_provider_answered() -> None:
    err = ProviderError(ProviderReason.ERROR, "provider 'azure': secret not found", Code.NOT_FOUND)
    published = provider_error(err, "class web")
    assert (published.reason, published.code) == ("ProviderError", Code.NOT_FOUND)
    assert ProviderError(ProviderReason.ERROR, "error code in the answer").code is Code.UNKNOWN


@pytest.mark.parametrize(
    ("error", "reason", "code"),
    [
        (
            OutsideRoot("target_path '/x' is not below the kubelet root"),
            "InvalidRequest",
            Code.INVALID_ARGUMENT,
        ),
        (TargetError("target_path '/x' is a symlink"), "FailedToMount", Code.FAILED_PRECONDITION),
    ],
)
def test_a_target_path_error_is_a_bad_request_only_when_outside_the_root(
    error: TargetError, reason: str, code: Code
) -> None:
    published = target_error(error)
    assert (published.reason, published.code) == (reason, code)


def test_the_metric_label_is_the_reasons_spelling() -> None:
    labels = {
        "os_type": metrics.OS_TYPE,
        "provider": "reasons-test",
        "error_type": "NodePublishSecretNotFound",
    }
    before = REGISTRY.get_sample_value("node_publish_error_total", labels) or 0.0
    metrics.publish_done("reasons-test", StoreReason.NODE_PUBLISH_SECRET_NOT_FOUND)
    assert REGISTRY.get_sample_value("node_publish_error_total", labels) == before + 1
