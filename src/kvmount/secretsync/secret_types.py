"""The Secret types whose keys the API server insists on, and those keys: pure names, shared by
the entry checks (data.py) and the ``kubernetes.io/tls`` split (tls.py)."""

from __future__ import annotations

TLS = "kubernetes.io/tls"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"
# Checked before a Secret is written, so that a bad entry is refused up front.
REQUIRED_KEYS = {
    TLS: (TLS_CERT, TLS_KEY),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
}
