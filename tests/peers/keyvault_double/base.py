"""What every part of the Key Vault double shares: JSON shapes, the Key Vault error, the
content types, the public host names, base64url and clock helpers."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

Json = dict[str, Any]
# (status, headers, body) as a listener writes it.
Response = tuple[int, dict[str, str], bytes | None]

FIXED_HOSTS = (
    "kvtest.vault.localhost",
    "kvother.vault.localhost",
    "kvbench.vault.localhost",
    "login.localhost",
)
# Public AAD hosts the double answers through its CONNECT proxy (instance discovery).
DISCOVERY_HOSTS = ("login.microsoftonline.com",)
PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"


class KvError(Exception):
    """A Key Vault style error: {"error": {"code", "message"}} with a status."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> Json:
        err: Json = {"code": self.code, "message": self.message}
        if self.inner:
            err["innererror"] = {"code": self.inner}
        return {"error": err}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unix_now() -> int:
    return int(time.time())


def json_response(status: int, body: Any, extra: dict[str, str] | None = None) -> Response:
    headers = {"Content-Type": "application/json; charset=utf-8", **(extra or {})}
    return status, headers, None if body is None else json.dumps(body).encode()
