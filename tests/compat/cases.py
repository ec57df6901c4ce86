"""The differential cases: each one Key Vault state (tests/compat/state.py), one set of
class parameters and one set of provider flags, sent as one MountRequest to both providers.

Object items are YAML text written as users write them (``filePermission: 0644``
unquoted stays unquoted); ``{placeholders}`` name the seeded objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

SPLIT = ("--write-cert-and-key-in-separate-files=true",)
NO_CHAIN = ("--construct-pem-chain=false",)
FLAG_SETS = ((), SPLIT, NO_CHAIN)
MISSING = "<left out>"  # as raw_objects or an attribute's value: not sent at all


@dataclass(frozen=True)
class Case:
    id: str
    objects: tuple[str, ...] = ()
    # The whole `objects` parameter instead of one built from `objects` (MISSING: left out).
    raw_objects: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    identity: str = "sp"  # sp, sp-capitalised, wi, none
    flags: tuple[str, ...] = ()
    # A secret that gets a new version after a first mount by each provider, before the compared one.
    change: str = ""


def item(name: str, kind: str, **fields: str) -> str:
    lines = [f"objectName: {name}", f"objectType: {kind}", *(f"{k}: {v}" for k, v in fields.items())]
    return "\n".join(lines)


def _flag_name(flags: tuple[str, ...]) -> str:
    return {(): "default", SPLIT: "split", NO_CHAIN: "nochain"}[flags]


def _objects() -> Iterator[Case]:
    yield Case("secret-utf8", (item("{plain}", "secret"),))
    yield Case("secret-utf8-explicit", (item("{plain}", "secret", objectEncoding="utf-8"),))
    yield Case("secret-hex", (item("{hex}", "secret", objectEncoding="hex"),))
    yield Case("secret-base64", (item("{b64}", "secret", objectEncoding="base64"),))
    yield Case("secret-base64-capitals", (item("{b64}", "secret", objectEncoding="BASE64"),))
    yield Case("secret-hex-not-hex", (item("{plain}", "secret", objectEncoding="hex"),))
    yield Case("secret-encoding-unknown", (item("{plain}", "secret", objectEncoding="utf-16"),))
    yield Case("secret-pfx-format-plain", (item("{plain}", "secret", objectFormat="pfx"),))
    yield Case("secret-format-unknown", (item("{plain}", "secret", objectFormat="der"),))
    yield Case("key-rsa", (item("{rsa}", "key"),))
    yield Case("key-ec", (item("{ec}", "key"),))
    yield Case("key-rsa-hsm", (item("{rsahsm}", "key"),))
    yield Case("key-ec-hsm", (item("{echsm}", "key"),))
    yield Case("key-oct", (item("{oct}", "key"),))
    yield Case("key-pinned", (item("{rsa}", "key", objectVersion="{vkey}"),))
    yield Case("cert-pinned", (item("{certpfx}", "cert", objectVersion="{vcert}"),))
    yield Case("certsecret-pinned", (item("{certpfx}", "secret", objectVersion="{vcert}"),))
    yield Case("secret-empty", (item("{empty}", "secret"),))
    yield Case("secret-unicode-lines", (item("{unicode}", "secret"),))
    yield Case("secret-latest-disabled", (item("{disabledlatest}", "secret"),))
    yield Case(
        "secret-latest-disabled-history", (item("{disabledlatest}", "secret", objectVersionHistory="10"),)
    )
    yield Case("key-pem-format", (item("{rsa}", "key", objectFormat="pem"),))
    yield Case("key-pfx-format", (item("{rsa}", "key", objectFormat="pfx"),))
    yield Case("key-encoding", (item("{rsa}", "key", objectEncoding="base64"),))
    yield Case("cert-pfx-backed", (item("{certpfx}", "cert"),))
    yield Case("cert-pem-backed", (item("{certpem}", "cert"),))
    yield Case("cert-pfx-format", (item("{certpfx}", "cert", objectFormat="pfx"),))
    yield Case("cert-encoding", (item("{certpfx}", "cert", objectEncoding="hex"),))
    yield Case("type-unknown", (item("{plain}", "blob"),))
    yield Case("type-capitalised", (item("{plain}", "Secret"),))
    # Certificate-backed secrets: every backing x objectFormat x objectEncoding x flags.
    for backing in ("certpfx", "certpem", "certleaf", "certshuffled", "certgap", "certec"):
        for fmt in ("", "pfx"):
            for encoding in ("", "base64"):
                for flags in FLAG_SETS:
                    fields = {"objectFormat": fmt} if fmt else {}
                    if encoding:
                        fields["objectEncoding"] = encoding
                    name = f"certsecret-{backing}-{fmt or 'pem'}-{encoding or 'utf8'}-{_flag_name(flags)}"
                    yield Case(name, (item(f"{{{backing}}}", "secret", **fields),), flags=flags)
    # Plain secrets holding PEM or PKCS#12: never converted nor split.
    for backing in ("pemsecret", "pfxsecret"):
        for fmt in ("", "pfx"):
            for flags in ((), SPLIT):
                fields = {"objectFormat": fmt} if fmt else {}
                name = f"plainsecret-{backing}-{fmt or 'pem'}-{_flag_name(flags)}"
                yield Case(name, (item(f"{{{backing}}}", "secret", **fields),), flags=flags)


def _versions() -> Iterator[Case]:
    yield Case("version-pinned", (item("{hist}", "secret", objectVersion="{v1}"),))
    yield Case("version-empty", (item("{hist}", "secret", objectVersion="''"),))
    yield Case("version-latest", (item("{hist}", "secret", objectVersion="latest"),))
    yield Case("version-disabled", (item("{hist}", "secret", objectVersion="{vdisabled}"),))
    yield Case("version-unknown", (item("{hist}", "secret", objectVersion="0" * 32),))
    for n in (0, 1, 2, 3, 4, 10):
        yield Case(f"history-{n}", (item("{hist}", "secret", objectVersionHistory=str(n)),))
    yield Case(
        "history-2-pinned", (item("{hist}", "secret", objectVersionHistory="2", objectVersion="{v2}"),)
    )
    yield Case(
        "history-10-pinned", (item("{hist}", "secret", objectVersionHistory="10", objectVersion="{v2}"),)
    )
    yield Case(
        "history-2-latest", (item("{hist}", "secret", objectVersionHistory="2", objectVersion="latest"),)
    )
    yield Case(
        "history-10-latest", (item("{hist}", "secret", objectVersionHistory="10", objectVersion="latest"),)
    )
    yield Case(
        "history-10-pinned-disabled",
        (item("{hist}", "secret", objectVersionHistory="10", objectVersion="{vdisabled}"),),
    )
    yield Case("history-10-alias", (item("{hist}", "secret", objectVersionHistory="10", objectAlias="h"),))
    yield Case("history-above-limit", (item("{hist}", "secret", objectVersionHistory="1001"),))
    yield Case("history-same-second", (item("{tied}", "secret", objectVersionHistory="10"),))
    yield Case("history-quoted", (item("{hist}", "secret", objectVersionHistory="'2'"),))
    yield Case("history-negative", (item("{hist}", "secret", objectVersionHistory="-1"),))
    yield Case("history-key", (item("{rsa}", "key", objectVersionHistory="10"),))
    yield Case("history-cert", (item("{certpfx}", "cert", objectVersionHistory="10"),))
    yield Case("change-then-mount", (item("{changing}", "secret"),), change="changing")
    yield Case(
        "change-then-mount-history",
        (item("{changing2}", "secret", objectVersionHistory="10"),),
        change="changing2",
    )


def _spellings() -> Iterator[Case]:
    for written, case_id in (
        ("'0644'", "0644-single-quoted"), ('"0600"', "0600-double-quoted"), ("0644", "0644"),
        ("0755", "0755"), ("0600", "0600"), ("400", "400"), ("0440", "0440"), ("0", "0"), ("~", "null"),
        ("' 0600 '", "0600-spaced"),
    ):  # fmt: skip
        yield Case(f"permission-{case_id}", (item("{plain}", "secret", filePermission=written),))
    for bad in ("0o644", "rw", "0999", "01777", "-0644"):
        yield Case(f"permission-bad-{bad}", (item("{plain}", "secret", filePermission=bad),))
    for alias, case_id in (
        ("./x", "dot-slash"), ("a//b", "double-slash"), ("dir/", "trailing-slash"),
        ("dir/sub/file", "nested"), ("./d/./e", "dots-inside"), ("a..b", "dots-in-name"),
        ("../x", "parent"), ("x/../../y", "parent-inside"), ("/etc/x", "absolute"),
        ("'..data'", "dotdot-prefix"),
    ):  # fmt: skip
        yield Case(f"alias-{case_id}", (item("{plain}", "secret", objectAlias=alias),))
    yield Case("alias-empty", (item("{plain}", "secret", objectAlias="''"),))
    yield Case(
        "permission-0600-history",
        (item("{hist}", "secret", objectVersionHistory="10", filePermission="0600"),),
    )
    yield Case("permission-0400-split", (item("{certpem}", "secret", filePermission="0400"),), flags=SPLIT)
    yield Case("alias-dot-slash-split", (item("{certpfx}", "secret", objectAlias="./tls"),), flags=SPLIT)
    yield Case(
        "split-plain-and-key-alias",
        (item("{plain}", "secret", objectAlias="p"), item("{hex}", "secret", objectAlias="p.key")),
        flags=SPLIT,
    )
    yield Case(
        "split-certificate-and-key-alias",
        (item("{certpfx}", "secret", objectAlias="tls"), item("{hex}", "secret", objectAlias="tls.key")),
        flags=SPLIT,
    )
    yield Case(
        "alias-file-under-file",
        (item("{plain}", "secret", objectAlias="a"), item("{hex}", "secret", objectAlias="a/b")),
    )
    yield Case("alias-long-name", (item("{plain}", "secret", objectAlias="n" * 256),))
    yield Case("alias-longest-name", (item("{plain}", "secret", objectAlias="n" * 255),))
    yield Case("alias-collision", (item("{plain}", "secret"), item("{hex}", "secret", objectAlias="{plain}")))
    yield Case(
        "alias-collision-cleaned",
        (item("{plain}", "secret", objectAlias="x"), item("{hex}", "secret", objectAlias="./x")),
    )
    # Whitespace around names and values.
    yield Case("space-object-name", (item("' {plain} '", "secret"),))
    yield Case("space-object-type", (item("{plain}", "' secret '"),))
    yield Case("space-alias", (item("{plain}", "secret", objectAlias="' spaced '"),))
    yield Case("space-version", (item("{hist}", "secret", objectVersion="' {v1} '"),))
    yield Case("space-encoding", (item("{hex}", "secret", objectEncoding="' hex '"),))
    yield Case("space-vault-name", (item("{plain}", "secret"),), attributes={"keyvaultName": " kvtest "})
    yield Case("space-tenant", (item("{plain}", "secret"),), attributes={"tenantID": " {tenant}\t"})
    yield Case("space-boolean", (item("{plain}", "secret"),), attributes={"useVMManagedIdentity": " false "})
    yield Case("space-objects", (item("{plain}", "secret"),), attributes={"objects": "\n  {objects}  \n"})
    yield Case(
        "space-cloud-name", (item("{plain}", "secret"),), attributes={"cloudName": " AzureStackCloud "}
    )


def _objects_parameter() -> Iterator[Case]:
    plain = "objectName: {plain}\n    objectType: secret"
    yield Case("objects-missing", raw_objects=MISSING)
    yield Case("objects-empty", raw_objects="")
    yield Case("objects-blank", raw_objects="  \n  ")
    yield Case("objects-empty-array", raw_objects="array: []")
    yield Case("objects-null-array", raw_objects="array:")
    yield Case("objects-malformed", raw_objects="array: [unclosed")
    yield Case("objects-top-level-list", raw_objects="- a\n- b")
    yield Case("objects-text", raw_objects="just text")
    yield Case("objects-other-key", raw_objects="other: 1")
    yield Case("objects-item-number", raw_objects="array:\n  - 5")
    yield Case("objects-item-mapping", raw_objects=f"array:\n  - {plain}")
    yield Case(
        "objects-item-flow-string", raw_objects='array:\n  - "objectName: {plain}\\nobjectType: secret"'
    )
    yield Case("objects-item-typo", (item("{plain}", "secret", objectVerison="1"),))
    yield Case("objects-item-key-twice", ("objectName: {plain}\nobjectName: {hex}\nobjectType: secret",))
    yield Case("objects-item-no-name", ("objectType: secret",))
    yield Case("objects-item-name-list", ("objectName: [a]\nobjectType: secret",))
    yield Case("objects-item-bad-yaml", ("objectName: [\nobjectType: secret",))
    yield Case("objects-three", (item("{plain}", "secret"), item("{rsa}", "key"), item("{certpem}", "cert")))


def _identities() -> Iterator[Case]:
    one = (item("{plain}", "secret"),)
    yield Case("identity-sp-capitalised-keys", one, identity="sp-capitalised")
    yield Case("identity-sp-missing", one, identity="none")
    yield Case("identity-workload", one, identity="wi")
    yield Case("identity-workload-no-token", one, identity="none", attributes={"clientID": "wi-app"})
    yield Case("identity-sp-tenant-missing", one, attributes={"tenantID": ""})
    yield Case("identity-sp-tenantId-spelling", one, attributes={"tenantID": "", "tenantId": "{tenant}"})
    yield Case("identity-stray-user-assigned", one, attributes={"userAssignedIdentityID": "stray"})
    yield Case("identity-vm-false", one, attributes={"useVMManagedIdentity": "false"})
    yield Case("identity-vm-not-boolean", one, attributes={"useVMManagedIdentity": "maybe"})
    yield Case("identity-pod-not-boolean", one, attributes={"usePodIdentity": "yes"})
    yield Case(
        "identity-two-modes", one, attributes={"useVMManagedIdentity": "true", "usePodIdentity": "true"}
    )
    yield Case(
        "identity-vm-and-client-id",
        one,
        identity="none",
        attributes={"useVMManagedIdentity": "true", "clientID": "x"},
    )
    # Upstream refuses before any token request; kvmount reaches IMDS (the double's).
    yield Case(
        "identity-vm-no-tenant",
        one,
        identity="none",
        attributes={"useVMManagedIdentity": "true", "tenantID": ""},
    )
    # Identity binding: only what both refuse before any token request (the proxy is AKS's).
    yield Case("identity-binding-not-boolean", one, attributes={"useAzureTokenProxy": "sometimes"})
    yield Case("identity-binding-no-client-id", one, attributes={"useAzureTokenProxy": "true"})
    yield Case(
        "identity-binding-no-token",
        one,
        identity="none",
        attributes={"useAzureTokenProxy": "true", "clientID": "x"},
    )
    yield Case(
        "identity-binding-and-vm",
        one,
        attributes={"useAzureTokenProxy": "true", "useVMManagedIdentity": "true"},
    )
    yield Case(
        "pod-info-missing",
        one,
        attributes={"csi.storage.k8s.io/pod.name": MISSING, "csi.storage.k8s.io/pod.namespace": MISSING},
    )
    yield Case("cloud-name-capitals", one, attributes={"cloudName": "AZURESTACKCLOUD"})
    yield Case("cloud-name-unknown", one, attributes={"cloudName": "MarsCloud"})
    yield Case("cloud-env-file-outside-dirs", one, attributes={"cloudEnvFileName": "{outside_env}"})
    yield Case("cloud-env-file-missing", one, attributes={"cloudEnvFileName": "/nonexistent/env.json"})
    yield Case("vault-name-short", one, attributes={"keyvaultName": "kv"})
    yield Case("vault-name-bad", one, attributes={"keyvaultName": "kv_bad!"})
    yield Case("object-not-found", (item("cmp-does-not-exist", "secret"),))


CASES: tuple[Case, ...] = (*_objects(), *_versions(), *_spellings(), *_objects_parameter(), *_identities())
