"""Which identity a mount reads with, chosen from its parameters before any network call.

Upstream's parameters (clientID, useAzureTokenProxy, useVMManagedIdentity, usePodIdentity, else
the node-publish secret's service principal) pick one mode; two at once are refused rather than
one silently winning. Pure: credentials.py builds the credential of the chosen identity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, SA_TOKENS
from kvmount.keyvault.errors import InvalidSpec
from kvmount.keyvault.types import IDENTITY_BINDING_AUDIENCE, TOKEN_AUDIENCE, IdentityMode

# aad-pod-identity's NMI listens here on the node (here, not in credentials.py, so that the
# provider's flags have its default without loading the Azure SDK).
NMI_PORT = 2579
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"", "0", "f", "F", "false", "FALSE", "False"}


def parse_bool(name: str, value: str) -> bool:
    # The spellings Go's strconv.ParseBool accepts, which upstream users rely on.
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidSpec(name, f'{value!r} is not a boolean; use "true" or "false"')


def _service_account_token(attributes: Mapping[str, str], audience: str, needed_by: str) -> str:
    raw = attributes.get(SA_TOKENS, "")
    if not raw:
        raise InvalidSpec(
            SA_TOKENS,
            f"is missing; {needed_by} needs the CSIDriver to request a token for audience {audience}",
        )
    try:
        tokens = json.loads(raw)
        token = tokens[audience]["token"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise InvalidSpec(
            SA_TOKENS,
            f"has no token for audience {audience}; add it to the CSIDriver's tokenRequests",
        ) from None
    if not isinstance(token, str):
        raise InvalidSpec(SA_TOKENS, f"token for {audience} is not a string")
    return token


def _node_publish_secret(secrets: Mapping[str, str] | None) -> tuple[str, str]:
    # Upstream reads clientid / clientsecret; users spell the keys in any case.
    lowered = {k.lower(): v for k, v in (secrets or {}).items()}
    return lowered.get("clientid", ""), lowered.get("clientsecret", "")


@dataclass(frozen=True)
class ChosenIdentity:
    """The identity a mount reads with; what proves it (a token, a secret) is never shown."""

    mode: IdentityMode
    tenant: str
    client_id: str
    token: str = field(default="", repr=False)
    sp_id: str = ""
    sp_secret: str = field(default="", repr=False)


def choose_identity(attributes: Mapping[str, str], secrets: Mapping[str, str] | None) -> ChosenIdentity:
    """The one identity mode a class's parameters choose, with what it needs, checked."""
    tenant = attributes.get("tenantID") or attributes.get("tenantId", "")
    use_pod = parse_bool("usePodIdentity", attributes.get("usePodIdentity", ""))
    use_vm = parse_bool("useVMManagedIdentity", attributes.get("useVMManagedIdentity", ""))
    use_proxy = parse_bool("useAzureTokenProxy", attributes.get("useAzureTokenProxy", ""))
    client_id = attributes.get("clientID", "")
    # Read for managed identity only; elsewhere a stray value is ignored, as upstream ignores it.
    user_assigned = attributes.get("userAssignedIdentityID", "") if use_vm else ""
    chosen = [
        name
        for name, on in (
            ("usePodIdentity", use_pod),
            ("useVMManagedIdentity", use_vm),
            ("useAzureTokenProxy", use_proxy),
            # With useAzureTokenProxy, clientID names the identity bound to.
            ("clientID", bool(client_id) and not use_proxy),
        )
        if on
    ]
    if len(chosen) > 1:
        raise InvalidSpec(
            " and ".join(chosen),
            "choose one identity mode: workload identity (clientID), useAzureTokenProxy, "
            "useVMManagedIdentity or usePodIdentity",
        )
    sp_id, sp_secret = _node_publish_secret(secrets)
    token = ""
    if use_proxy:
        mode = IdentityMode.TOKEN_PROXY
        if not client_id:
            raise InvalidSpec("clientID", "is required for useAzureTokenProxy (identity binding)")
        token = _service_account_token(attributes, IDENTITY_BINDING_AUDIENCE, "useAzureTokenProxy")
    elif client_id:
        mode = IdentityMode.WORKLOAD
        token = _service_account_token(attributes, TOKEN_AUDIENCE, "workload identity (clientID)")
    elif use_vm:
        mode = IdentityMode.MANAGED
    elif use_pod:
        mode = IdentityMode.POD
        if not attributes.get(POD_NAME) or not attributes.get(POD_NAMESPACE):
            raise InvalidSpec(POD_NAME, "and pod.namespace are required for usePodIdentity")
    else:
        mode = IdentityMode.SERVICE_PRINCIPAL
        if not sp_id or not sp_secret:
            raise InvalidSpec(
                "nodePublishSecretRef",
                "has no clientid and clientsecret; set them in the node-publish secret, or choose "
                "workload identity (clientID), useVMManagedIdentity or usePodIdentity",
            )
    if mode not in (IdentityMode.MANAGED, IdentityMode.POD) and not tenant:
        raise InvalidSpec("tenantID", f"is required for {mode.value}")
    return ChosenIdentity(mode, tenant, client_id or user_assigned, token, sp_id, sp_secret)
