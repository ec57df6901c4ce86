"""One TLS context per CA bundle for the process: the reads' transport
(http/transport.py) takes its contexts here, and requests' HTTPS adapter below
gives the same to the credentials' connections.

The credentials' token requests (Azure AD, the managed identity endpoint) go through
requests. For every new connection, urllib3 builds a TLS context and loads the CA
bundle requests chose into it (certifi's, or REQUESTS_CA_BUNDLE's): about 140
certificates, 1 MiB and a few milliseconds of CPU, held for as long as the connection
stays in the pool. Measured with a bundle of certifi's size (bench/RESULTS.md): 1,000
mounts by 100 identities left the provider 6 MiB larger than with one context. Here
the bundle requests chose for a connection is loaded once, into one context, and
every connection verified against that bundle uses it: the same certificates, the
same checks (urllib3's own context, hostname matching as before). As for the reads
(http/transport.py) and in upstream's provider, the bundle is read once: a
changed bundle takes effect when the provider restarts.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import urllib3
from requests.adapters import HTTPAdapter


@functools.lru_cache(maxsize=8)
def loaded_context(bundle: str, stdlib: bool = False) -> ssl.SSLContext:
    """A context that trusts exactly the CA bundle ``bundle`` (a file, or a directory of
    hashed certificates), loaded once for the process: urllib3's context, or with ``stdlib``
    the standard library's client context (http.client, http/connections.py). Raises
    OSError or ssl.SSLError when the bundle cannot be loaded; a failure is not kept."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if stdlib else urllib3.util.create_urllib3_context()
    if os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    else:
        context.load_verify_locations(cafile=bundle)
    return context


class SharedContextAdapter(HTTPAdapter):
    """An HTTPAdapter (requests' defaults) whose verified HTTPS pools share a context."""

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        # requests picks the bundle (verify, REQUESTS_CA_BUNDLE, certifi) and sets it on the pool.
        super().cert_verify(conn, url, verify, cert)
        if verify is False or not url.lower().startswith("https") or cert:
            return
        bundle = conn.ca_certs or conn.ca_cert_dir
        if not bundle:
            return
        try:
            context = loaded_context(bundle)
        except (OSError, ssl.SSLError):
            return  # urllib3 loads it per connection as before, and reports the failure as always
        # New connections of this pool take the loaded context instead of loading the bundle.
        conn.conn_kw["ssl_context"] = context
        conn.ca_certs = conn.ca_cert_dir = None
