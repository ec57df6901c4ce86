"""The provider's Prometheus metrics, named as upstream's, with bounded labels."""

from __future__ import annotations

import platform

from prometheus_client import Counter, Histogram

from kvmount.base.metrics import bounded
from kvmount.keyvault import Category

OS_TYPE = platform.system().lower()
_ERRORS = {"", *(c.value for c in Category)}
_OBJECT_TYPES = {"secret", "key", "cert"}
_METHODS = {"Mount", "Version"}

KEYVAULT_REQUEST = Histogram(
    "keyvault_request",
    "Seconds one Key Vault request took, by object type and error category",
    ["os_type", "object_type", "error"],
)
GRPC_REQUEST = Histogram(
    "grpc_request",
    "Seconds one provider gRPC call took, by method and status code",
    ["os_type", "grpc_method", "grpc_code"],
)


def observe_keyvault(object_type: str, error: str, seconds: float) -> None:
    KEYVAULT_REQUEST.labels(OS_TYPE, bounded(object_type, _OBJECT_TYPES), bounded(error, _ERRORS)).observe(
        seconds
    )


def observe_grpc(method: str, code: str, seconds: float) -> None:
    # Status code names are a closed set already (grpc.StatusCode).
    GRPC_REQUEST.labels(OS_TYPE, bounded(method, _METHODS), code).observe(seconds)


STALE_SERVED = Counter(
    "keyvault_stale_served",
    "Objects a Mount answered with content kept from an earlier read because Key Vault was failing "
    "(--serve-stale-on-error)",
    ["os_type"],
)


def observe_stale(objects: int) -> None:
    STALE_SERVED.labels(OS_TYPE).inc(objects)
