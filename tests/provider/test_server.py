"""The provider process: socket, health, metrics, signals, and what it never reveals."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.proto import v1alpha1_pb2 as pb
from tests.certs import make_chain
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider


def test_socket_is_private_and_health_answers(provider: Provider) -> None:
    assert stat.S_IMODE(os.stat(provider.socket).st_mode) & 0o077 == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{provider.healthz_port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read() == b"ok\n"


@pytest.mark.peer
def test_stale_socket_is_replaced(keyvault: KeyVaultDouble, tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "azure.sock"))
    stale.close()  # a socket file nobody listens on, as a crash leaves it
    started = start_provider(tmp_path, keyvault)
    try:
        assert started.stub.Version(pb.VersionRequest(), timeout=10).runtime_name
    finally:
        stop_provider(started)


@pytest.mark.peer
def test_sigterm_drains_in_flight_mounts(
    keyvault: KeyVaultDouble, sp: dict[str, str], tmp_path: Path
) -> None:
    name = f"slow-{os.urandom(4).hex()}"
    keyvault.put_secret(VAULT, name, "late but whole")
    started = start_provider(tmp_path, keyvault)
    attributes = started.attributes([{"objectName": name, "objectType": "secret"}])
    results: list[object] = []
    keyvault.set_latency(1500)
    try:
        worker = threading.Thread(target=lambda: results.append(started.mount(attributes, sp)))
        worker.start()
        time.sleep(0.5)
        started.process.send_signal(signal.SIGTERM)
        worker.join(timeout=30)
    finally:
        keyvault.set_latency(0)
    assert started.process.wait(timeout=30) == 0
    started.channel.close()
    (response,) = results
    assert isinstance(response, pb.MountResponse) and response.files[0].contents == b"late but whole"


def test_no_secret_token_or_key_leaks(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    """Secret values, tokens and private keys stay out of logs, error messages and metrics."""
    value = f"VALUE-{os.urandom(12).hex()}"
    name = f"leak-{os.urandom(4).hex()}"
    keyvault.put_secret(VAULT, name, value)
    chain = make_chain()
    cert = f"leakcert-{os.urandom(4).hex()}"
    keyvault.import_certificate(VAULT, cert, chain.pfx())
    sa_token = f"SATOKEN-{os.urandom(12).hex()}"
    tokens = json.dumps({"api://AzureADTokenExchange": {"token": sa_token}})
    good = provider.attributes(
        [{"objectName": name, "objectType": "secret"}, {"objectName": cert, "objectType": "secret"}]
    )
    provider.mount(good, sp)
    details: list[str] = []
    failing = [
        (good, {"clientid": sp["clientid"], "clientsecret": "WRONG-" + sp["clientsecret"]}),
        (provider.attributes([{"objectName": "missing-x", "objectType": "secret"}]), sp),
        (provider.attributes([{"objectName": name, "objectType": "secret", "objectEncoding": "hex"}]), sp),
        (
            provider.attributes(
                [{"objectName": "missing-y", "objectType": "secret"}],
                clientID="c",
                **{SA_TOKENS: tokens},
            ),
            None,
        ),
        (provider.attributes([{"objectName": name, "objectType": "secret", "bogus": "x"}]), sp),
    ]
    for attributes, secrets in failing:
        with pytest.raises(grpc.RpcError) as info:
            provider.mount(attributes, secrets)
        details.append(info.value.details() or "")
    issued = [str(r["token"]) for r in keyvault.requests() if r.get("token")]
    assert issued, "the double saw bearer tokens to look for"
    key_pem = chain.key_pem().decode().splitlines()[1]
    forbidden = [value, sp["clientsecret"], sa_token, key_pem, *issued]
    haystacks = {"log": provider.log.read_text(), "metrics": provider.metrics(), "errors": "\n".join(details)}
    for where, text in haystacks.items():
        for needle in forbidden:
            assert needle not in text, f"a secret reached the {where}"
    assert "keyvault_request" in haystacks["metrics"] and "grpc_request" in haystacks["metrics"]


def test_metric_labels_are_bounded(provider: Provider) -> None:
    labels = set()
    for line in provider.metrics().splitlines():
        if line.startswith(("keyvault_request_count", "grpc_request_count")):
            labels.add(line.split("{", 1)[1].split("}", 1)[0])
    allowed_codes = {c.name for c in grpc.StatusCode}
    for label_set in labels:
        pairs = dict(p.split("=", 1) for p in label_set.split(","))
        values = {k: v.strip('"') for k, v in pairs.items()}
        if "error" in values:
            assert values["error"] in {
                "",
                "invalid",
                "not_found",
                "forbidden",
                "unauthenticated",
                "unavailable",
                "internal",
            }
        if "grpc_code" in values:
            assert values["grpc_code"] in allowed_codes
