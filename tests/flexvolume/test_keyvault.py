"""The driver as kubelet runs it, against the Key Vault / AAD / IMDS / NMI double.

The vault's URL comes from the cloud: the volumes use cloudname
AzureStackCloud, and the node names the environment file through
AZURE_ENVIRONMENT_FILEPATH (one process per call, so the variable is that
call's alone), as go-autorest and so the original driver read it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from kvmount.volume import mounts
from tests.certs import make_chain
from tests.flexvolume.driver import Call, Driver
from tests.peers.keyvault_double import Fault

VAULT = "kvtest"
TENANT = "tenant"
# The double is shared by the session: names of our own.
_RUN = uuid.uuid4().hex[:8]
SECRET, RSA, EC, CERT = (f"flex-{kind}-{_RUN}" for kind in ("secret", "rsa", "ec", "cert"))


@dataclass(frozen=True)
class Seeded:
    kv: Any  # tests.peers.keyvault_double.KeyVaultDouble
    env: dict[str, str]
    client_id: str
    client_secret: str
    secret_v1: str
    rsa: dict[str, Any]
    ec: dict[str, Any]
    leaf_pem: bytes


def _b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


@pytest.fixture(scope="module")
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    try:
        kv = request.getfixturevalue("keyvault")
    except pytest.FixtureLookupError:
        pytest.skip("no keyvault fixture in tests/conftest.py yet")
    first = kv.put_secret(VAULT, SECRET, "first value")
    kv.put_secret(VAULT, SECRET, "second value")
    chain = make_chain()
    kv.import_certificate(VAULT, CERT, chain.pfx())
    client_id = "flex-app"
    client_secret = f"flex-sp-{secrets.token_hex(12)}"
    kv.register_aad_client(client_id, secret=client_secret)
    env_file = tmp_path_factory.mktemp("cloud") / "azurestack.json"
    env_file.write_text(
        json.dumps(
            {
                "name": "AzureStackCloud",
                "activeDirectoryEndpoint": f"{kv.authority}/",
                "keyVaultDNSSuffix": f"vault.localhost:{kv.port}",
            }
        )
    )
    env = {**os.environ, **kv.env(), "AZURE_ENVIRONMENT_FILEPATH": str(env_file)}
    return Seeded(
        kv=kv,
        env=env,
        client_id=client_id,
        client_secret=client_secret,
        secret_v1=first["id"].rsplit("/", 1)[1],
        rsa=kv.create_key(VAULT, RSA)["key"],
        ec=kv.create_key(VAULT, EC, kty="EC", curve="P-256")["key"],
        leaf_pem=chain.pem("leaf"),
    )


@pytest.fixture
def kv_driver(driver: Driver, seeded: Seeded) -> Driver:
    driver.env = seeded.env
    return driver


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sp_options(seeded: Seeded, **extra: str) -> dict[str, str]:
    options = {
        "keyvaultname": VAULT,
        "tenantid": TENANT,
        "cloudname": "AzureStackCloud",
        "keyvaultobjectnames": SECRET,
        "keyvaultobjecttypes": "secret",
        "kubernetes.io/secret/clientid": b64(seeded.client_id),
        "kubernetes.io/secret/clientsecret": b64(seeded.client_secret),
        "kubernetes.io/pod.name": "web",
        "kubernetes.io/pod.namespace": "shop",
        "kubernetes.io/pod.uid": "0f7c9a1e",
        "kubernetes.io/fsType": "",
        "kubernetes.io/readwrite": "ro",
        "kubernetes.io/pvOrVolumeName": "secrets",
    }
    options.update(extra)
    return options


def identity_options(seeded: Seeded, **extra: str) -> dict[str, str]:
    options = sp_options(seeded, **extra)
    del options["kubernetes.io/secret/clientid"], options["kubernetes.io/secret/clientsecret"]
    return options


def read(target: str, name: str) -> bytes:
    with open(os.path.join(target, name), "rb") as fh:
        return fh.read()


def assert_failed_cleanly(done: Call, target: str) -> str:
    assert done.returncode == 1
    assert done.doc["status"] == "Failure"
    assert done.stderr == ""
    assert not mounts.is_mounted(target)
    message: str = done.doc["message"]
    return message


def test_all_object_types_with_aliases_and_versions(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    options = sp_options(
        seeded,
        keyvaultobjectnames=f"{SECRET};{SECRET};{RSA};{EC};{CERT}",
        keyvaultobjecttypes="secret;secret;key;key;cert",
        keyvaultobjectversions=f";{seeded.secret_v1};;;",
        keyvaultobjectaliases="latest.txt;first.txt;;ec.pem;tls/leaf.crt",
    )
    done = kv_driver.mount(target, options)
    assert (done.returncode, done.doc, done.stderr) == (0, {"status": "Success"}, "")
    assert mounts.is_mounted(target)
    assert read(target, "latest.txt") == b"second value"
    assert read(target, "first.txt") == b"first value"
    rsa_key = load_pem_public_key(read(target, RSA))
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    assert rsa_key.public_numbers().n == _b64url_int(seeded.rsa["n"])
    ec_key = load_pem_public_key(read(target, "ec.pem"))
    assert isinstance(ec_key, ec.EllipticCurvePublicKey)
    assert ec_key.public_numbers().x == _b64url_int(seeded.ec["x"])
    assert read(target, "tls/leaf.crt") == seeded.leaf_pem
    for name in ("latest.txt", RSA, "tls/leaf.crt"):
        assert stat.S_IMODE(os.stat(os.path.join(target, name)).st_mode) == 0o644

    again = kv_driver.mount(target, options)
    assert again.doc == {"status": "Success"}
    assert kv_driver("unmount", target).doc == {"status": "Success"}
    assert not mounts.is_mounted(target)
    assert kv_driver("unmount", target).doc == {"status": "Success"}


def test_legacy_singular_options_and_a_per_volume_environment_file(
    kv_driver: Driver, seeded: Seeded, target: str
) -> None:
    options = sp_options(
        seeded,
        keyvaultobjectname=SECRET,
        keyvaultobjecttype="secret",
        keyvaultobjectversion=seeded.secret_v1,
        keyvaultobjectalias="pinned",
        cloudenvfilename=seeded.env["AZURE_ENVIRONMENT_FILEPATH"],
    )
    del options["keyvaultobjectnames"], options["keyvaultobjecttypes"]
    env = {k: v for k, v in seeded.env.items() if k != "AZURE_ENVIRONMENT_FILEPATH"}
    done = kv_driver("mount", target, json.dumps(options), env=env)
    assert done.doc == {"status": "Success"}
    assert read(target, "pinned") == b"first value"


def test_vm_managed_identity_through_imds(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    seeded.kv.reset_log()
    options = identity_options(seeded, usevmmanagedidentity="true", vmmanagedidentityclientid="mi-client")
    done = kv_driver.mount(target, options)
    assert done.doc == {"status": "Success"}
    assert read(target, SECRET) == b"second value"
    assert "mi-client" in json.dumps(seeded.kv.requests())


def test_pod_identity_through_nmi(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    options = identity_options(seeded, usepodidentity="true", nmiport=str(seeded.kv.nmi_port))
    done = kv_driver.mount(target, options)
    assert done.doc == {"status": "Success"}
    assert read(target, SECRET) == b"second value"


def test_pod_identity_refused_by_nmi_mounts_nothing(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    seeded.kv.deny_pod("shop", "web")
    try:
        done = kv_driver.mount(
            target, identity_options(seeded, usepodidentity="true", nmiport=str(seeded.kv.nmi_port))
        )
    finally:
        seeded.kv.allow_pod("shop", "web")
    assert "pod identity (NMI) refused a token for pod shop/web" in assert_failed_cleanly(done, target)


def test_missing_object_fails_naming_it(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    done = kv_driver.mount(
        target, sp_options(seeded, keyvaultobjectnames=f"{SECRET};nope", keyvaultobjecttypes="secret;key")
    )
    message = assert_failed_cleanly(done, target)
    assert "key 'nope'" in message and "not found" in message


def test_key_vault_outage_mounts_nothing(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    seeded.kv.set_outage(503)
    try:
        done = kv_driver.mount(target, sp_options(seeded))
    finally:
        seeded.kv.set_outage(0)
    assert "unreachable or failing" in assert_failed_cleanly(done, target)


class ProcessWatch:
    """Samples every process's argv and environment while a call runs."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[bytes, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) == os.getpid():
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes()
                    environ = (entry / "environ").read_bytes()
                except OSError:
                    continue
                self.seen[int(entry.name)] = (argv, environ)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def slow_vault(seeded: Seeded) -> Iterator[None]:
    seeded.kv.set_latency(300)  # a wider window for the process watch
    yield
    seeded.kv.set_latency(0)


@pytest.mark.usefixtures("slow_vault")
@pytest.mark.parametrize("works", [True, False], ids=["mounted", "refused"])
def test_client_secret_is_never_shown(kv_driver: Driver, seeded: Seeded, target: str, works: bool) -> None:
    secret = seeded.client_secret if works else f"flex-wrong-{secrets.token_hex(12)}"
    options = sp_options(
        seeded,
        keyvaultobjectnames=f"{SECRET};{RSA}",
        keyvaultobjecttypes="secret;key",
        **{"kubernetes.io/secret/clientsecret": b64(secret)},
    )
    kubelet_argv = json.dumps(options).encode()
    with ProcessWatch() as watch:
        done = kv_driver("mount", target, kubelet_argv.decode())
    assert done.doc["status"] == ("Success" if works else "Failure")
    shown = [done.stdout, done.stderr, kv_driver.log()]
    assert kv_driver.log(), "the driver logs something, so the check means something"
    for text in shown:
        assert secret not in text
        assert b64(secret) not in text
    drivers = [pid for pid, (argv, _) in watch.seen.items() if kubelet_argv in argv]
    assert drivers, "the watch saw the driver process"
    for pid, (argv, environ) in watch.seen.items():
        assert secret.encode() not in argv and secret.encode() not in environ, pid
        # kubelet itself puts the base64 form in the driver's argv; nothing may pass it on.
        if pid not in drivers:
            assert b64(secret).encode() not in argv, pid


# ---------------------------------------------------------------- hostile answers
# FlexVolume runs as root in kubelet's cgroup: an answer it held whole would be the node's memory.


def reinstall(driver: Driver, *extra: str) -> None:
    """The driver again, running the kvmount under test, with ``extra`` install flags."""
    root = os.path.dirname(driver.plugin_dir)
    done = driver.install("--kubelet-root-dir", root, "--python", driver.tree_interpreter(), *extra)
    assert done.returncode == 0, done


def test_a_gzip_bomb_is_refused_naming_the_object(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    reinstall(kv_driver)
    name = f"flex-bomb-{_RUN}"
    seeded.kv.put_secret(VAULT, name, "value")
    seeded.kv.set_faults(Fault("gzip-bomb", count=100, path=name, size=64 << 20))
    try:
        done = kv_driver.mount(target, sp_options(seeded, keyvaultobjectnames=name))
    finally:
        seeded.kv.set_faults()
    message = assert_failed_cleanly(done, target)
    assert name in message and "--max-object-bytes" in message and "value" not in message


def test_a_drip_fed_mount_ends_at_the_mount_timeout(kv_driver: Driver, seeded: Seeded, target: str) -> None:
    reinstall(kv_driver, "--mount-timeout=3s")
    name = f"flex-drip-{_RUN}"
    seeded.kv.put_secret(VAULT, name, "value")
    # A byte every 0.2 s: the 30 s read timeout would never pass between two of them.
    seeded.kv.set_faults(Fault("drip", count=100, path=name, seconds=0.2, size=10_000))
    start = time.monotonic()
    try:
        done = kv_driver.mount(target, sp_options(seeded, keyvaultobjectnames=name))
    finally:
        seeded.kv.set_faults()
    assert time.monotonic() - start < 20  # kubelet gives the call about two minutes
    message = assert_failed_cleanly(done, target)
    assert name in message and "time budget" in message
