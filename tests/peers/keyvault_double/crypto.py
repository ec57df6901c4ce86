"""Key and certificate material: JWKs from generated or imported keys, certificate import
from PFX or PEM, the backing secret's PFX/PEM export, and the certificate policy."""

from __future__ import annotations

import base64
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives._serialization import _KeySerializationEncryption
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.peers.keyvault_double.base import PEM, Json, KvError, b64u, unb64u


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def public_jwk(public: Any, hsm: bool) -> Json:
    if isinstance(public, rsa.RSAPublicKey):
        nums = public.public_numbers()
        return {
            "kty": "RSA-HSM" if hsm else "RSA",
            "n": b64u(_int_bytes(nums.n)),
            "e": b64u(_int_bytes(nums.e)),
        }
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        return {
            "kty": "EC-HSM" if hsm else "EC",
            "crv": CURVE_NAMES[public.curve.name],
            "x": b64u(_int_bytes(point.x, size)),
            "y": b64u(_int_bytes(point.y, size)),
        }
    raise KvError(400, "BadParameter", "Unsupported key type")


CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}
CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521", "secp256k1": "P-256K"}
RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_OPS = ["sign", "verify"]
OCT_OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]


def generate_key(body: Json) -> tuple[Json, list[str]]:
    kty = str(body.get("kty", ""))
    ops = body.get("key_ops")
    if kty in ("RSA", "RSA-HSM"):
        size = int(body.get("key_size") or 2048)
        if size not in (2048, 3072, 4096):
            raise KvError(400, "BadParameter", f"Invalid key size {size} for RSA key")
        exponent = int(body.get("public_exponent") or 65537)
        key = rsa.generate_private_key(public_exponent=exponent, key_size=size)
        return public_jwk(key.public_key(), kty.endswith("-HSM")), list(ops or RSA_OPS)
    if kty in ("EC", "EC-HSM"):
        crv = str(body.get("crv") or "P-256")
        if crv not in CURVES:
            raise KvError(400, "BadParameter", f"Invalid curve name {crv}")
        eckey = ec.generate_private_key(CURVES[crv])
        return public_jwk(eckey.public_key(), kty.endswith("-HSM")), list(ops or EC_OPS)
    if kty in ("oct", "oct-HSM"):
        size = int(body.get("key_size") or 256)
        if size not in (128, 192, 256):
            raise KvError(400, "BadParameter", f"Invalid key size {size} for oct key")
        # Symmetric material never leaves Key Vault, so there is nothing to show.
        return {"kty": kty}, list(ops or OCT_OPS)
    raise KvError(400, "BadParameter", f"Invalid key type: {kty or '(missing)'}")


def import_jwk(jwk: Json, hsm: bool) -> tuple[Json, list[str]]:
    kty = str(jwk.get("kty", ""))
    ops = jwk.get("key_ops")
    try:
        if kty.startswith("RSA"):
            n = int.from_bytes(unb64u(jwk["n"]), "big")
            e = int.from_bytes(unb64u(jwk["e"]), "big")
            public: Any = rsa.RSAPublicNumbers(e, n).public_key()
            return public_jwk(public, hsm or kty.endswith("-HSM")), list(ops or RSA_OPS)
        if kty.startswith("EC"):
            curve = CURVES[jwk["crv"]]
            x = int.from_bytes(unb64u(jwk["x"]), "big")
            y = int.from_bytes(unb64u(jwk["y"]), "big")
            public = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
            return public_jwk(public, hsm or kty.endswith("-HSM")), list(ops or EC_OPS)
        if kty.startswith("oct"):
            return {"kty": "oct-HSM" if hsm else kty}, list(ops or OCT_OPS)
    except (KeyError, ValueError, TypeError) as exc:
        raise KvError(400, "BadParameter", f"Invalid JWK: {exc}") from exc
    raise KvError(400, "BadParameter", f"Invalid key type: {kty or '(missing)'}")


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def parse_certificate(
    value: str, password: str | None
) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    raw: bytes
    text = value.strip()
    if text.startswith("-----BEGIN"):
        raw = text.encode()
    else:
        try:
            raw = base64.b64decode(text, validate=False)
        except ValueError as exc:
            raise KvError(400, "BadParameter", "The certificate value is not valid base64") from exc
    pwd = password.encode() if password else None
    key: Any
    certs: list[x509.Certificate]
    if raw.lstrip().startswith(b"-----BEGIN"):
        blocks = re.findall(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", raw, re.S)
        pem_keys = [
            m.group(0)
            for m in re.finditer(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", raw, re.S)
        ]
        if not pem_keys:
            raise KvError(
                400,
                "BadParameter",
                "Private key is not specified in the specified X.509 PEM certificate content. Please "
                "specify private key in the X.509 PEM certificate content.",
            )
        try:
            key = serialization.load_pem_private_key(pem_keys[0], pwd)
            certs = x509.load_pem_x509_certificates(raw) if blocks else []
        except (ValueError, TypeError) as exc:
            raise KvError(
                400, "BadParameter", f"The specified PEM X.509 certificate content is invalid: {exc}"
            ) from exc
    else:
        try:
            key, leaf0, extra = pkcs12.load_key_and_certificates(raw, pwd)
        except (ValueError, TypeError) as exc:
            raise KvError(
                400,
                "BadParameter",
                "The specified PKCS#12 X.509 certificate content can not be read. Please check if "
                "certificate is in valid PKCS#12 format.",
            ) from exc
        certs = ([leaf0] if leaf0 else []) + list(extra)
        if key is None:
            raise KvError(
                400, "BadParameter", "Private key is not specified in the specified X.509 PKCS#12 content."
            )
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KvError(400, "BadParameter", "Only RSA and EC certificate keys are supported")
    leafs = [c for c in certs if _same_key(c, key)]
    if not leafs:
        raise KvError(400, "BadParameter", "No certificate in the content matches the private key")
    leaf = leafs[0]
    chain = [c for c in certs if c is not leaf]
    return key, leaf, chain


def secret_value(key: PrivateKey, leaf: x509.Certificate, chain: list[x509.Certificate], ctype: str) -> str:
    if ctype == PEM:
        out = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for c in [leaf, *chain]:
            out += c.public_bytes(serialization.Encoding.PEM)
        return out.decode()
    # Key Vault re-exports the PFX with an empty password, key and whole chain
    # included, encrypted with 3DES under a SHA-1 MAC: the one profile every
    # reader knows (Go's x/crypto/pkcs12, which upstream uses, reads no other).
    # cryptography's public builder refuses an empty password; its encryption
    # object takes one and writes the standard empty (BMPString "") password.
    empty_password = _KeySerializationEncryption(
        serialization.PrivateFormat.PKCS12,
        b"",
        kdf_rounds=None,
        hmac_hash=hashes.SHA1(),
        key_cert_algorithm=pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC,
    )
    pfx = pkcs12.serialize_key_and_certificates(None, key, leaf, chain or None, empty_password)
    return base64.b64encode(pfx).decode()


def policy_for(given: Json | None, key: PrivateKey, leaf: x509.Certificate, ctype: str, now: int) -> Json:
    given = given or {}
    key_props: Json = dict(given.get("key_props") or {})
    if isinstance(key, rsa.RSAPrivateKey):
        key_props.update(kty="RSA", key_size=key.key_size)
    else:
        key_props.update(kty="EC", crv=CURVE_NAMES.get(key.curve.name, key.curve.name))
    key_props.setdefault("exportable", True)
    key_props.setdefault("reuse_key", False)
    x509_props: Json = dict(given.get("x509_props") or {})
    x509_props.setdefault("subject", leaf.subject.rfc4514_string())
    try:
        ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        x509_props.setdefault("ekus", [o.dotted_string for o in ekus])
    except x509.ExtensionNotFound:
        pass
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            x509_props.setdefault("sans", {"dns_names": dns})
    except x509.ExtensionNotFound:
        pass
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    x509_props.setdefault("validity_months", max(1, round(days / 30.44)))
    return {
        "key_props": key_props,
        "secret_props": {"contentType": ctype},
        "x509_props": x509_props,
        "lifetime_actions": given.get("lifetime_actions")
        or [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "EmailContacts"}}],
        "issuer": given.get("issuer") or {"name": "Unknown"},
        "attributes": {"enabled": True, "created": now, "updated": now},
    }
