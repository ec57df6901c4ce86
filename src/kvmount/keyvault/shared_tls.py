"""requests' HTTPS adapter, whose connections share one TLS context per CA bundle.

The credentials' token requests (Azure AD, the managed identity endpoint) go through
requests. For every new connection, urllib3 builds a TLS context and loads the CA
bundle requests chose into it (certifi's, or REQUESTS_CA_BUNDLE's): about 140
certificates, 1 MiB and a few milliseconds of CPU, held for as long as the connection
stays in the pool. Measured with a bundle of certifi's size (bench/RESULTS.md): 1,000
mounts by 100 identities left the provider 6 MiB larger than with one context. Here
the bundle requests chose for a connection is loaded once, into one context, and
every connection verified against that bundle uses it: the same certificates, the
same checks (urllib3's own context, hostname matching as before). As for the reads
(keyvault/transport.py) and in upstream's provider, the bundle is read once: a
changed bundle takes effect when the provider restarts.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import urllib3
from requests.adapters import HTTPAdapter

_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_lock = threading.Lock()


def _context(ca_file: str | None, ca_dir: str | None) -> ssl.SSLContext | None:
    """The context that trusts exactly this bundle; None if it cannot be loaded (urllib3 then
    loads it per connection as before, and reports the failure as it always did)."""
    key = (ca_file, ca_dir)
    with _lock:
        found = _contexts.get(key)
    if found is not None:
        return found
    context = urllib3.util.create_urllib3_context()
    try:
        context.load_verify_locations(cafile=ca_file, capath=ca_dir)
    except (OSError, ssl.SSLError):
        return None
    with _lock:
        return _contexts.setdefault(key, context)


class SharedContextAdapter(HTTPAdapter):
    """An HTTPAdapter (requests' defaults) whose verified HTTPS pools share a context."""

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        # requests picks the bundle (verify, REQUESTS_CA_BUNDLE, certifi) and sets it on the pool.
        super().cert_verify(conn, url, verify, cert)
        if verify is False or not url.lower().startswith("https") or cert:
            return
        context = _context(conn.ca_certs, conn.ca_cert_dir)
        if context is not None:
            # New connections of this pool take the loaded context instead of loading the bundle.
            conn.conn_kw["ssl_context"] = context
            conn.ca_certs = conn.ca_cert_dir = None
