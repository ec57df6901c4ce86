"""Token requests' HTTPS connections share one TLS context per CA bundle, loaded once, and
verify exactly as before: the bundle requests chose, refused when it does not trust the server."""

from __future__ import annotations

import shutil
from pathlib import Path

import certifi
import pytest
import requests

from kvmount.keyvault.http.shared_tls import SharedContextAdapter
from tests.peers.keyvault_double import KeyVaultDouble


def _session() -> requests.Session:
    session = requests.Session()
    session.mount("https://", SharedContextAdapter())
    return session


def test_the_bundle_is_loaded_once_for_every_connection(keyvault: KeyVaultDouble, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    shutil.copy(keyvault.ca_path, bundle)
    session = _session()
    assert session.get(keyvault.authority, verify=str(bundle), timeout=30).status_code < 500
    # urllib3 alone would read the bundle again for the next new connection, and fail on this.
    bundle.write_text("not a certificate\n")
    session.close()  # no connection left: the next request opens one
    assert session.get(keyvault.authority, verify=str(bundle), timeout=30).status_code < 500


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_bundle_that_does_not_trust_the_server_is_refused(keyvault: KeyVaultDouble) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        _session().get(keyvault.authority, verify=certifi.where(), timeout=30)
    # verify=False stays requests' own: no context shared, nothing checked.
    assert _session().get(keyvault.authority, verify=False, timeout=30).status_code < 500
