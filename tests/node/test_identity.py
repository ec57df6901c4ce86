"""Workload identity through kubelet: the token kubelet requests for the CSIDriver's
tokenRequests audience is what the provider exchanges at Azure AD."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.node.conftest import MOUNT, VAULT, Cluster
from tests.support import eventually

AUDIENCE = "api://AzureADTokenExchange"


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def test_pod_token_is_exchanged_at_the_token_endpoint(cluster: Cluster) -> None:
    run, client_id = cluster.name("wi"), cluster.name("wi-app")
    cluster.kv.put_secret(VAULT, run, "for workload identity")
    cluster.secret_provider_class("app", [{"objectName": run, "objectType": "secret"}], clientID=client_id)
    cluster.pod("web", f"cat {MOUNT}/{run}; echo; exec sleep 3600", cluster.csi_volume("app"))
    cluster.running("web")
    cluster.log_shows("web", "for workload identity")
    pod = cluster.read_pod("web")

    def exchanges() -> list[dict[str, Any]]:
        return [
            r["form"]
            for r in cluster.kv.requests()
            if r.get("service") == "aad" and r.get("form", {}).get("client_id") == client_id
        ]

    (form, *_) = eventually(exchanges, timeout=10, what=f"a token request for {client_id}")
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    token = claims(form["client_assertion"])
    assert token["iss"] == cluster.node.api.issuer
    assert token["aud"] == [AUDIENCE]
    assert token["sub"] == f"system:serviceaccount:{cluster.namespace}:app"
    # Bound to this pod by kubelet's TokenRequest.
    assert token["kubernetes.io"]["pod"] == {"name": "web", "uid": pod["metadata"]["uid"]}
