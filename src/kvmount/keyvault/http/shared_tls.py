"""One TLS context per CA bundle for the process: the transport of the reads and of the
token requests (http/transport.py, http/token_transport.py) takes its contexts here.

urllib3 alone builds a TLS context for every new connection and loads the CA bundle
into it (certifi's, or REQUESTS_CA_BUNDLE's): about 140 certificates, 1 MiB and a
few milliseconds of CPU, held for as long as the connection stays in the pool.
Measured with a bundle of certifi's size (bench/RESULTS.md): 1,000 mounts by 100
identities left the provider 6 MiB larger than with one context. Here a bundle is
loaded once, into one context, and every connection verified against that bundle
uses it: the same certificates, the same checks. As in upstream's provider, the
bundle is read once: a changed bundle takes effect when the provider restarts.
"""

from __future__ import annotations

import functools
import os
import ssl

import urllib3


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
