"""The credential of a KMS entry: a client certificate, or workload identity.

Its token requests (Entra ID's token endpoint and MSAL's authority metadata) go through
the provider's bounded token transport (keyvault's ``CredentialOptions.transport``): each
answer decoded at most --max-token-answer-bytes, whole within the read timeout and by the
call's --timeout.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import AzureAuthorityHosts, CertificateCredential, ClientAssertionCredential

from kvmount.keyvault import Category, CredentialOptions, InvalidSpec, KeyVaultError, token_options
from kvmount.kms.config import CLIENT_CERT, AuthMethod, KMSConfig

# Authorities outside Microsoft's instance discovery (Azure Stack, test doubles)
# must skip it, or MSAL refuses them as unknown.
_MICROSOFT_HOSTS = {
    AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
    AzureAuthorityHosts.AZURE_CHINA,
    AzureAuthorityHosts.AZURE_GOVERNMENT,
}


def _federated_token(path: str) -> str:
    # Read on every assertion: kubelet replaces the projected token before it expires.
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as err:
        raise KeyVaultError(
            f"workload identity: cannot read the federated token file {path!r}: {err.strerror}",
            Category.UNAUTHENTICATED,
        ) from None
    if not token:
        raise KeyVaultError(
            f"workload identity: the federated token file {path!r} is empty", Category.UNAUTHENTICATED
        )
    return token


def build_credential(
    config: KMSConfig, client_cert: bytes | None, max_token_answer_bytes: int
) -> TokenCredential:
    """The entry's credential, each answer to its token requests at most
    ``max_token_answer_bytes`` decoded; client_cert is CLIENT_CERT for client-certificate auth."""
    transport = CredentialOptions(max_token_answer_bytes=max_token_answer_bytes).transport()
    host = urllib.parse.urlsplit(config.authority).netloc
    options: dict[str, Any] = {
        "authority": config.authority,
        "disable_instance_discovery": host not in _MICROSOFT_HOSTS,
        **token_options(transport),
    }
    if config.auth_method is AuthMethod.WORKLOAD_IDENTITY:
        path = config.federated_token_file
        return ClientAssertionCredential(
            config.tenant_id, config.client_id, lambda: _federated_token(path), **options
        )
    if not client_cert:
        raise InvalidSpec(
            CLIENT_CERT, f"is required for client-certificate auth (Secret {config.cert_secret_name!r})"
        )
    try:
        return CertificateCredential(
            config.tenant_id, config.client_id, certificate_data=client_cert, **options
        )
    except (ValueError, TypeError):  # TypeError: an encrypted private key, and no password to give
        raise InvalidSpec(
            CLIENT_CERT,
            "must be a PEM or an unencrypted PKCS#12 holding the certificate and its private key "
            "(an encrypted key is not supported; export it without a password)",
        ) from None
