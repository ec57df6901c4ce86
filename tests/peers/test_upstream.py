"""Upstream's binaries work as peers: its provider mounts from the Key Vault double
exactly what kvmount's provider mounts, and its driver serves CSI."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kvmount.csi.attributes import SA_TOKENS
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import v1alpha1_pb2 as pb
from tests.certs import make_chain
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.upstream import UpstreamDriver, UpstreamProvider
from tests.provider.conftest import Provider, start_provider, stop_provider
from tests.support import starts_process

VAULT = "kvtest"


@pytest.fixture(scope="module")
@starts_process
def kvmount_provider(
    keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Provider]:
    started = start_provider(tmp_path_factory.mktemp("kvmount-provider"), keyvault)
    yield started
    stop_provider(started)


@dataclass(frozen=True)
class Seeded:
    """One secret, one key and one certificate in the double, and the files each must become."""

    objects: list[dict[str, str]]
    expected: dict[str, bytes]


@pytest.fixture(scope="module")
def seeded(keyvault: KeyVaultDouble) -> Seeded:
    suffix = uuid.uuid4().hex[:8]
    secret, key, cert = f"up-secret-{suffix}", f"up-key-{suffix}", f"up-cert-{suffix}"
    keyvault.put_secret(VAULT, secret, "plain value")
    jwk = keyvault.create_key(VAULT, key)["key"]
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(_unb64u(jwk["e"]), "big"), int.from_bytes(_unb64u(jwk["n"]), "big")
    )
    public_pem = numbers.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    chain = make_chain(f"{cert}.example")
    keyvault.import_certificate(VAULT, cert, chain.pfx())
    return Seeded(
        objects=[
            {"objectName": secret, "objectType": "secret"},
            {"objectName": key, "objectType": "key"},
            {"objectName": cert, "objectType": "cert", "objectAlias": "tls.crt"},
            {"objectName": cert, "objectType": "secret", "objectAlias": "tls.pem"},
        ],
        expected={
            secret: b"plain value",
            key: public_pem,
            "tls.crt": chain.pem("leaf"),
            # The certificate's secret: its PFX as PEM, PKCS#8 key first, then leaf to root.
            "tls.pem": chain.key_pem() + chain.pem("leaf", "intermediate", "root"),
        },
    )


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mount_request(
    kv: KeyVaultDouble, cloud_env: str, seeded: Seeded, secrets: dict[str, str] | None, **extra: str
) -> pb.MountRequest:
    """A Mount as the driver sends it for pod default/web (upstream insists on the pod's name)."""
    attributes = {
        "csi.storage.k8s.io/pod.name": "web",
        "csi.storage.k8s.io/pod.namespace": "default",
        "csi.storage.k8s.io/pod.uid": str(uuid.uuid4()),
        "csi.storage.k8s.io/serviceAccount.name": "default",
        "keyvaultName": VAULT,
        "tenantID": kv.tenant,
        "cloudName": "AzureStackCloud",
        "cloudEnvFileName": cloud_env,
        "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in seeded.objects]}),
        **extra,
    }
    return pb.MountRequest(
        attributes=json.dumps(attributes),
        secrets=json.dumps(secrets or {}),
        target_path="/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount",
        permission="420",
    )


def files(response: pb.MountResponse) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in response.files}


def versions(response: pb.MountResponse) -> dict[str, str]:
    return {v.id: v.version for v in response.object_version}


def test_upstream_provider_answers_version(upstream_provider: Callable[..., UpstreamProvider]) -> None:
    response = upstream_provider().stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=10)
    assert response.runtime_name == "secrets-store-csi-driver-provider-azure"
    assert response.version == "v1alpha1"


@pytest.mark.parametrize("identity", ["service principal", "workload identity"])
def test_upstream_and_kvmount_mount_the_same_files(
    identity: str,
    upstream_provider: Callable[..., UpstreamProvider],
    kvmount_provider: Provider,
    keyvault: KeyVaultDouble,
    seeded: Seeded,
) -> None:
    if identity == "service principal":
        client_id, secret = f"up-app-{os.urandom(3).hex()}", f"up-secret-{os.urandom(8).hex()}"
        keyvault.register_aad_client(client_id, secret=secret)
        request = mount_request(
            keyvault, str(kvmount_provider.cloud_env), seeded, {"clientid": client_id, "clientsecret": secret}
        )
    else:
        tokens = {"api://AzureADTokenExchange": {"token": f"sa.{os.urandom(8).hex()}.jwt"}}
        request = mount_request(
            keyvault,
            str(kvmount_provider.cloud_env),
            seeded,
            None,
            clientID=f"up-wi-{os.urandom(3).hex()}",
            **{SA_TOKENS: json.dumps(tokens)},
        )
    keyvault.reset_log()
    theirs = upstream_provider().stub.Mount(request, timeout=60)
    token_requests = [r for r in keyvault.requests() if r.get("service") == "aad" and r["method"] == "POST"]
    ours = kvmount_provider.stub.Mount(request, timeout=60)

    assert not theirs.error.code and not ours.error.code
    assert files(theirs) == {path: (0o644, content) for path, content in seeded.expected.items()}
    assert files(ours) == files(theirs)
    assert versions(ours) == versions(theirs)
    assert len(token_requests) == 1, "upstream reached the AAD double through its own credential"


def test_upstream_driver_serves_plugin_info(
    upstream_driver: Callable[..., UpstreamDriver], tmp_path: Path
) -> None:
    driver = upstream_driver(tmp_path)
    info = driver.identity.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=10)
    assert info.name == "secrets-store.csi.k8s.io"
    assert info.vendor_version
