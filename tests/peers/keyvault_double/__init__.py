"""An Azure Key Vault + Azure AD + IMDS + pod-identity NMI double for tests.

Why: the tests need a real REST peer for the azure-keyvault-* and azure-identity
SDKs, and no genuine emulator can be installed here, so this is one faithful
double in one place (stdlib ``http.server`` + ``ssl`` + ``cryptography``).

Listeners (all on 127.0.0.1):

* TLS port (``port``): Key Vault data plane, selected by the Host header's first
  label (``https://<vault>.vault.localhost:<port>/...``, vaults made lazily),
  the Azure AD double on host ``login.localhost`` and the control API under
  ``/_double/`` (any host, no auth).
* plain-HTTP IMDS port (``imds_port``): ``GET /metadata/identity/oauth2/token``.
  azure-identity/MSAL read ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` for the IMDS
  host; real IMDS is plain HTTP, so point that variable at ``imds_url``.
* plain-HTTP NMI port (``nmi_port``): ``GET /host/token/?resource=...`` with
  ``podns``/``podname`` headers, like aad-pod-identity's NMI (upstream port 2579).
* plain-HTTP proxy port (``proxy_port``): ``CONNECT login.microsoftonline.com:443``
  only, tunnelled to the TLS port. MSAL Go asks that host's
  ``/common/discovery/instance`` before it trusts any other authority host (such
  as ``login.localhost:<port>``); Go programs reach it with ``go_env()``
  (``HTTPS_PROXY`` = ``proxy_url``, ``NO_PROXY`` for everything else).

Names need ``scripts/peers/hosts.sh`` (adds kvtest/kvother/kvbench.vault.localhost
and login.localhost to /etc/hosts). Clients trust ``ca_path`` (``REQUESTS_CA_BUNDLE``
or ``connection_verify=``).

Stable API used by other tests::

    from tests.peers.keyvault_double import KeyVaultDouble
    kv = KeyVaultDouble(tenant="tenant").start()   # in-process, server threads
    kv.port, kv.imds_port, kv.nmi_port, kv.ca_path, kv.tenant
    kv.url_for("kvtest")        # https://kvtest.vault.localhost:<port>
    kv.authority                # https://login.localhost:<port>  (disable_instance_discovery=True)
    kv.imds_url, kv.nmi_url     # http://127.0.0.1:<imds_port>, http://127.0.0.1:<nmi_port>
    kv.proxy_url                # http://127.0.0.1:<proxy_port> (AAD instance discovery)
    kv.scope                    # https://vault.localhost:<port>/.default
    kv.env()                    # REQUESTS_CA_BUNDLE, SSL_CERT_FILE, AZURE_POD_IDENTITY_AUTHORITY_HOST
    kv.go_env()                 # env() plus HTTPS_PROXY/NO_PROXY, for Go's MSAL (upstream's provider)
    kv.write_cloud_env(path)    # AzureStackCloud env file for cloudEnvFileName
    kv.requests() / kv.reset_log() / kv.set_latency(ms) / kv.set_outage(status)
    kv.set_faults(Fault("status", count=2, status=429, retry_after="1"), ...)  # see Fault
    kv.set_faults(Fault("gzip-bomb", size=8 << 20, service="imds", client="uami-1"))  # a token route
    kv.register_aad_client(client_id, secret=None, cert_pem=None, federated=None)
    kv.deny_pod(namespace, name) / kv.allow_pod(namespace, name) / kv.set_pod_client_id(client_id)
    kv.deny_object(vault, kind, name, deny=True)  # 403 AccessDenied on reads of that object
    kv.put_secret(vault, name, value, content_type=None, enabled=True, tags=None) -> SecretBundle dict
    kv.create_key(vault, name, kty="RSA", size=None, curve=None) -> KeyBundle dict
    kv.import_certificate(vault, name, data, content_type="application/x-pkcs12", password=None)
    kv.update(vault, kind, name, version, body) -> bundle dict (e.g. {"attributes": {"enabled": False}})
    kv.stop()

    proc = KeyVaultDouble.spawn(state_dir)   # same API, server in a subprocess
    proc.stop()

CLI (from the repository root): ``python -m tests.peers.keyvault_double --port 0 --state-dir DIR
[--imds-port N] [--nmi-port N] [--tenant T]`` writes ``DIR/ca.pem`` and, once listening,
``DIR/ready.json`` = ``{"port", "imds_port", "nmi_port", "proxy_port", "ca", "tenant", "pid"}``.

Control API (JSON): ``GET /_double/requests``, ``POST /_double/reset-log``,
``POST /_double/latency {"ms"}``, ``POST /_double/outage {"status"}`` (0 clears;
-1 drops the connection without a response), ``POST /_double/faults {"faults": [Fault
fields]}`` (replaces the injected faults; see ``Fault``), ``POST /_double/aad-clients
{"client_id", "secret"?, "cert_pem"?, "federated"?}``, ``POST /_double/nmi {"deny"|"allow":
[ns, name]}`` or ``{"client_id"}``, ``POST /_double/deny {"vault", "kind", "name",
"deny"}``, and ``ANY /_double/vault/<vault>/<data-plane
path>`` (the data plane without auth, latency, outage or logging, for seeding).

Rooms: ``base`` (shared shapes and helpers), ``store`` (the vaults' objects and their
rendering), ``crypto`` (keys, certificate import, PFX/PEM export), ``vault_api`` (the data-plane
routes), ``identity`` (Azure AD, IMDS, NMI), ``faults`` (injected failures), ``listeners``
(HTTP/TLS plumbing), ``server`` (routing, log, control API), ``client`` (the test-facing API).
"""

from tests.peers.keyvault_double.base import PEM, PKCS12, KvError
from tests.peers.keyvault_double.client import KeyVaultDouble, KeyVaultDoubleProcess
from tests.peers.keyvault_double.faults import Fault
from tests.peers.keyvault_double.server import DoubleServer

__all__ = ["PEM", "PKCS12", "DoubleServer", "Fault", "KeyVaultDouble", "KeyVaultDoubleProcess", "KvError"]
