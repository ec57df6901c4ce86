"""Failures on demand: injected Key Vault faults (a status, a reset, a stall, a cut body,
a hostile body) taken by the next matching requests, the exceptions the listener acts them
out from, and the hostile bodies' writer."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.peers.keyvault_double.base import Response, json_response


class DropConnection(Exception):
    """Close the connection without an answer (an outage of status -1)."""


class InjectedFault(Exception):
    """An injected failure the handler acts out on the socket: a reset, a stall or a cut mid-body."""

    def __init__(self, fault: Fault, response: Response) -> None:
        super().__init__(fault.kind)
        self.fault = fault
        self.response = response


@dataclass
class Fault:
    """One injected failure (``POST /_double/faults``), taken by the next ``count`` requests
    of ``service`` whose path contains ``path``: ``keyvault`` (the data plane), or a token
    route, ``aad`` (Azure AD: its token endpoint and authority metadata), ``imds`` or ``nmi``,
    there only those for ``client`` when set (the token request's client id; NMI's
    ``podns/podname``): ``status`` answers ``status`` (with
    ``Retry-After: retry_after`` when set); ``reset`` resets the connection (TCP RST) without
    an answer; ``stall`` sends the headers and half the body, then nothing for ``seconds``;
    ``cut`` sends the headers and half the body, then closes the connection. The body
    faults (``BODY_FAULTS``, see ``body_fault``) send the real answer behind ``size`` bytes
    of JSON whitespace."""

    kind: str
    count: int = 1
    path: str = ""
    status: int = 503
    retry_after: str = ""
    seconds: float = 30.0
    size: int = 0
    service: str = "keyvault"
    client: str = ""


class Faults:
    """The pending injected faults, shared by the listener threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def set(self, faults: list[Fault]) -> None:
        with self._lock:
            self._pending = [f for f in faults if f.count > 0]

    def take(self, service: str, path: str, client: str = "") -> Fault | None:
        with self._lock:
            for fault in self._pending:
                if fault.service == service and fault.path in path and fault.client in ("", client):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._pending.remove(fault)
                    return fault
        return None

    @staticmethod
    def act(fault: Fault) -> Response:
        body = {"error": {"code": "Throttled" if fault.status == 429 else "ServiceUnavailable",
                          "message": "The double is injecting a fault."}}  # fmt: skip
        extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        response = json_response(fault.status if fault.kind == "status" else 200, body, extra)
        if fault.kind == "status":
            return response
        raise InjectedFault(fault, response)


# Hostile bodies, each the real answer (a valid JSON document) behind ``size`` bytes of
# JSON whitespace, so a client without bounds takes them as good answers.
BODY_FAULTS = ("gzip-bomb", "huge-body", "endless-chunked", "drip")


def body_fault(h: BaseHTTPRequestHandler, fault: Fault, answer: Response) -> None:
    """``gzip-bomb``: the padded body gzipped (1 GiB packs into about 1 MB);
    ``huge-body``: the padded body as it is; ``endless-chunked``: chunks of whitespace
    without end (a non-zero ``size`` stops it there, without the last chunk: a safety
    stop for runs against an unbounded client); ``drip``: the padded body one byte
    every ``seconds``. Each ends when the client goes away."""
    status, headers, payload = answer
    data, block = payload or b"", b" " * 65536
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)

    def padding() -> Iterator[bytes]:
        for start in range(0, fault.size, len(block)):
            yield block[: fault.size - start]
        yield data

    if fault.kind == "endless-chunked":
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        while not fault.size or sent < fault.size:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
        return
    if fault.kind == "gzip-bomb":
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        packed = b"".join([*(packer.compress(part) for part in padding()), packer.flush()])
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(packed)))
        h.end_headers()
        h.wfile.write(packed)
        return
    h.send_header("Content-Length", str(fault.size + len(data)))
    h.end_headers()
    for part in padding():
        if fault.kind == "huge-body":
            h.wfile.write(part)
            continue
        for i in range(len(part)):  # drip
            h.wfile.write(part[i : i + 1])
            time.sleep(fault.seconds)
