"""The webhook's HTTPS server: POST /validate (AdmissionReviews), GET /healthz.

Bounded: a request body is at most --max-request-bytes (declared by Content-Length, refused
before it is read), each request has --request-timeout to arrive (the TLS handshake included,
done on the request's own thread so a slow client never holds up the others), and at most
MAX_CONNECTIONS are served at once (more are closed: the API server's failurePolicy decides).
The certificate is read again when its files change (cert-manager renews it in place).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kvmount.admission.review import BadReview, review

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
PATH = "/validate"


@dataclass(frozen=True)
class Options:
    deny: bool
    max_request_bytes: int
    request_timeout: float


class Certificates:
    """The serving certificate and key, read again for a new connection once their files changed;
    a renewal that cannot be read keeps the last good one (and says so)."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self._files = (cert_file, key_file)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._context = self._load()  # at start, unreadable files are an error

    def _stat(self) -> tuple[int, ...]:
        stats = [os.stat(f) for f in self._files]
        return tuple(n for s in stats for n in (s.st_mtime_ns, s.st_ino, s.st_size))

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self._files)
        return context

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._context = self._load()
            except (OSError, ssl.SSLError) as err:
                log.warning("certificate unreadable; serving the last one", extra={"error": str(err)})
            return self._context


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], certificates: Certificates, options: Options) -> None:
        super().__init__(address, _Handler)
        self.certificates = certificates
        self.socket = certificates.context().wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self.options = options
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that fails its handshake or goes away: a line, not a traceback.
        log.debug("admission connection failed", extra={"client": str(client_address)[:64]})


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer

    def setup(self) -> None:
        self.request.settimeout(self.server.options.request_timeout)
        self.request.context = self.server.certificates.context()
        self.deadline = time.monotonic() + self.server.options.request_timeout
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admission request", extra={"request": (format % args)[:200]})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._answer(200, b"ok\n", "text/plain")
        else:
            self._answer(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._answer(404, b"not found\n", "text/plain")
            return
        limit = self.server.options.max_request_bytes
        declared = self.headers.get("Content-Length", "")
        if not declared.isascii() or not declared.isdigit() or len(declared) > 12:
            self._answer(411, b"a Content-Length is required\n", "text/plain")
            return
        if int(declared) > limit:
            refusal = f"the body is over {limit} bytes (--max-request-bytes)\n"
            self._answer(413, refusal.encode(), "text/plain")
            return
        body = self._read(int(declared))
        if body is None:
            return
        try:
            answer = review(body, self.server.options.deny)
        except BadReview as err:
            self._answer(400, f"{err}\n".encode(), "text/plain")
            return
        response = answer["response"]
        log.info(
            "reviewed",
            extra={"allowed": response["allowed"], "warnings": len(response.get("warnings", []))},
        )
        self._answer(200, json.dumps(answer).encode(), "application/json")

    def _read(self, size: int) -> bytes | None:
        """The body, or None when it did not arrive within the request's time."""
        chunks: list[bytes] = []
        left = size
        while left > 0:
            if time.monotonic() > self.deadline:
                return None
            try:
                chunk = self.rfile.read1(min(left, 65536))
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
