"""Every deliberate difference from upstream, row for row the "Compatibility with upstream"
table of docs/switching-from-upstream.md (tests/compat/test_differential.py checks that the two agree).

A row's ``cases`` are the differential cases that show it: each of them must differ
from upstream, and every other case must be identical. Rows without cases are
differences the provider differential cannot show (gRPC codes, the driver side).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    kvmount: str
    upstream: str
    why: str
    cases: tuple[str, ...] = ()


ROWS: tuple[Row, ...] = (
    Row(
        "`objectVersionHistory: N` above 1 writes exactly N files, `name/0` … `name/N-1`",
        "writes N+1 files, `name/0` … `name/N`",
        "N is what the parameter and upstream's documentation promise; the extra file is an off-by-one",
        ("history-2", "history-3", "history-2-pinned", "history-2-latest"),
    ),
    Row(
        "Of versions created in the same second (Key Vault's timestamps have one-second resolution), "
        "the one listed later counts as the newer",
        "keeps them in listing order, the one listed first as the newer (its sort is stable only up to "
        "12 versions)",
        "the order Key Vault lists them in decides, the same for any number of versions; upstream's "
        "comes from its sort's internals",
        ("history-same-second",),
    ),
    Row(
        "A pinned `objectVersion` that is not an enabled version is `NOT_FOUND`, with or without "
        "`objectVersionHistory`",
        "with a history, answers OK and mounts no file for that object (without one it fails too)",
        "the pod would start without the file it asked for",
        ("history-10-pinned-disabled",),
    ),
    Row(
        "Typos are refused before any network call, naming the field: an unknown object key "
        "(`objectVerison`), a key other than `array` in `objects`, a negative `objectVersionHistory`",
        "ignores them: mounts without the misspelt setting, mounts nothing for `other:`, "
        "reads a negative history as 0",
        "a silently ignored typo is a wrong or missing secret found only when the application fails",
        ("objects-item-typo", "objects-other-key", "history-negative"),
    ),
    Row(
        "A `filePermission` that is not an octal mode from 0 to 0777 (`0o644`, `rw`, `0999`, "
        "`01777`, `-0644`) is refused naming the field",
        "writes mode 0 for what it cannot parse, anything else as given (setuid bits, negative modes)",
        "a wrong mode on a secret file is a security bug; mode 0 also makes the file unreadable",
        (
            "permission-bad-0o644",
            "permission-bad-rw",
            "permission-bad-0999",
            "permission-bad-01777",
            "permission-bad--0644",
        ),
    ),
    Row(
        "Two objects writing one file (same name or alias, also once cleaned: `x` and `./x`), or a "
        "file under another's (`a` and `a/b`), are refused naming both; with "
        "`--write-cert-and-key-in-separate-files` every secret's `.crt` and `.key` count",
        "answers both; the driver writes whichever comes last, or fails half-way through the volume; "
        "only certificates' secrets get a `.crt` and `.key`",
        "one secret would silently replace another; which secrets are certificates' is known only "
        "after the fetch, so the check counts them all",
        (
            "alias-collision",
            "alias-collision-cleaned",
            "alias-file-under-file",
            "split-plain-and-key-alias",
            "split-certificate-and-key-alias",
        ),
    ),
    Row(
        "A file name with a part over 255 bytes is refused naming the object",
        "answers it; its driver then fails to write the volume",
        "the error names the object, before any network call",
        ("alias-long-name",),
    ),
    Row(
        "Limits: `--max-version-history` (1000), `--max-objects-per-mount` (10000), "
        "`--max-mount-bytes` (64 MiB), `--max-object-bytes` (1 MiB, one Key Vault answer as it arrives)",
        "has none",
        "one class cannot exhaust the node's provider, which every pod shares",
        ("history-above-limit",),
    ),
    Row(
        "A file name with `..` inside a component (`a..b`) is accepted; `..` components and "
        "absolute names are refused, as upstream",
        "refuses any file name containing `..`",
        "`a..b` is an ordinary file name, and the driver's writer accepts it",
        ("alias-dots-in-name",),
    ),
    Row(
        "Items of `objects.array` may be YAML mappings as well as the usual block strings",
        "refuses a mapping item",
        "the FlexVolume adapter passes its objects so; a mapping says the same as the string",
        ("objects-item-mapping",),
    ),
    Row(
        "`tenantID` is required for workload identity, identity binding and service principals only",
        "refuses every mount without `tenantID`, managed and pod identity too",
        "a managed or pod identity's token comes from IMDS or NMI, which know the tenant",
        ("identity-vm-no-tenant",),
    ),
    Row(
        "A Mount without the pod's name and namespace is served (pod identity still needs them)",
        "refuses every Mount without them",
        "`kvmount mount` and the FlexVolume adapter share the provider's pipeline; the driver sends "
        "them whenever the CSIDriver sets `podInfoOnMount`",
        ("pod-info-missing",),
    ),
    Row(
        "A custom cloud's (`AzureStackCloud`) Azure AD endpoint is trusted as its environment file names it",
        "asks the public cloud's instance discovery (`login.microsoftonline.com`) about it first",
        "an air-gapped Azure Stack has no public endpoint to ask",
    ),
    Row(
        "Two identity modes at once (`clientID`, `useVMManagedIdentity`, `usePodIdentity`) are "
        "refused naming the fields",
        "refuses two of the booleans; `clientID` with one of them silently uses the boolean's mode",
        "a class must say which identity reads the vault",
    ),
    Row(
        "Failures answer precise gRPC codes (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, "
        "`UNAUTHENTICATED`, `UNAVAILABLE`) naming the field or object, never a secret",
        "answers `Unknown` with its error chain",
        "the driver's events and metrics can tell a typo from an outage",
    ),
    Row(
        "One mount's objects are fetched in parallel (`--max-concurrent-fetches`); credentials and "
        "tokens are reused across mounts, keyed by the whole identity",
        "fetches objects one by one, with a new credential and token per mount",
        "mount latency and Azure AD throttling on busy nodes (`bench/`); no pod gets another pod's token",
    ),
    Row(
        "Identical reads by one identity share a request in flight; rotation polls may take a read "
        "completed within `--coalesce-seconds` (5 s)",
        "reads every object for every mount and poll",
        "P pods starting together cost one read; a mount that starts after a change still sees it",
    ),
    Row(
        "`cloudEnvFileName` is read only from `--cloud-env-dirs` (default `/etc/kubernetes,/cloudEnv`), "
        "as a regular file of at most 64 KiB",
        "reads whatever path the class names",
        "a class author must not make the node's provider read arbitrary files",
        ("cloud-env-file-outside-dirs",),
    ),
    Row(
        "`cloudEnvFileName` is read for each mount; no process-wide environment variable is set",
        "sets `AZURE_ENVIRONMENT_FILEPATH` for the whole process",
        "concurrent mounts of different custom clouds race upstream",
    ),
    Row(
        "Metric labels carry status categories, never raw error text",
        "puts error messages into metric labels",
        "bounded label cardinality; no object names or secrets in metrics",
    ),
    Row(
        "Driver: `ControllerGetCapabilities` answers no capability; `ValidateVolumeCapabilities` checks "
        "its arguments and answers `NOT_FOUND`",
        "answers one capability of type `UNKNOWN`; every Controller call is `UNIMPLEMENTED`",
        "conformance tests (csi-sanity) reject an `UNKNOWN` capability; a node-only plugin has no "
        "volume a controller made",
    ),
    Row(
        "Driver: the tmpfs is mounted `nosuid,nodev`, `mode=0755`, with a size limit",
        "mounts tmpfs with the kernel's defaults",
        "a secrets volume never needs device files or setuid; the limit bounds node memory",
    ),
    Row(
        "Driver: a synced TLS Secret's `tls.crt` starts with the certificate of the file's key, then "
        "its chain to the root, whatever the file's order",
        "copies the file's certificates in file order",
        "a TLS server presents the first certificate as its own; an intermediate first breaks the handshake",
    ),
    Row(
        "Driver: TLS sync refuses a file with more than one private key, or a key that does not belong "
        "to the leaf certificate (`FailedToCreateSecret`)",
        "takes the last key block, whether it matches or not",
        "a `tls.key` that does not belong to `tls.crt` fails only when a client connects",
    ),
    Row(
        "Driver: TLS sync also reads a PKCS#12 file written as base64 text (`objectFormat: pfx` "
        "without `objectEncoding: base64`)",
        "fails that entry and syncs nothing for it",
        "that file is what the provider writes for such a class; reading it breaks no working setup",
    ),
    Row(
        "Driver: a `secretObjects` entry without `type` syncs an `Opaque` Secret",
        "refuses the entry (`secret type is empty`) and syncs no Secret for it",
        "Opaque is the API server's own default; no setup that works with upstream changes",
    ),
    Row(
        "Driver: an entry the API server would refuse (a data key such as `a/b`) is refused before any "
        "API call; the entries after it still sync",
        "sends it, and on the refusal stops: the entries after it are never synced (retried every 5 s)",
        "one bad entry must not take every later Secret with it",
    ),
    Row(
        "Driver: a failed publish is also a `FailedToMount` Warning event on the pod, and a rotation a "
        "`MountRotationComplete` or `MountRotationFailed` event",
        "puts no event on the pod from a publish or a rotation (kubelet's own `FailedMount` carries "
        "the error)",
        "the pod's events name the class, provider and object that failed, without the node's logs",
    ),
    Row(
        "`objectNamePattern` (a glob) and `objectTags` (every pair must match) on an `objects` entry, "
        "instead of `objectName`, select the vault's enabled, unexpired objects of the type; each is "
        "mounted as if named, inside `objectAlias` as a directory; no match is `NOT_FOUND` unless "
        '`allowEmpty: "true"`. kvmount\'s own',
        "ignores the keys: refuses the entry for its missing `objectName`",
        "the most asked-for feature of upstream's trackers (driver #529, provider #477, #357, #1405): "
        '"every secret whose name starts with app1-", "all secrets tagged team=web"',
    ),
    Row(
        "`jmesPath` on a secret (the AWS provider's shape: a list of `path` and `objectAlias`) writes "
        "each part of a JSON secret as a file of its own; the whole secret only under an `objectAlias` "
        "of the entry's own. kvmount's own",
        "ignores the key: writes the whole secret under its name",
        "the most asked-for feature of upstream's tracker for JSON secrets (provider #885); the AWS "
        "provider's classes read the same",
    ),
    Row(
        "Driver: a SecretProviderClass's annotation `kvmount.io/rotation-poll-interval` (not below "
        "`--min-rotation-poll-interval`, default 10s) sets how often the reconciler rotates that class's "
        "volumes; each volume has a schedule of its own. kvmount's own",
        "one `--rotation-poll-interval` for every volume of the node",
        "upstream's driver #322: a class of short-lived credentials must rotate often without every other "
        "class polling Key Vault as often",
    ),
    Row(
        "Driver: a failed first publish removes the target directory it made",
        "leaves the empty target directory behind",
        "nothing of a failed mount stays on the node; kubelet's retry makes the directory again",
    ),
    Row(
        "Driver and sync controller: a Secret type Kubernetes acts on "
        "(`kubernetes.io/service-account-token`, `bootstrap.kubernetes.io/token`, any other "
        "`kubernetes.io` or `k8s.io` type but basic-auth, ssh-auth, tls, dockercfg and dockerconfigjson) "
        "is refused, naming the type",
        "writes any type (the sync controller's admission policy allows bootstrap tokens)",
        "the writers may create Secrets anywhere: a namespace user who may not create Secrets would have "
        "the token controller mint a long-lived token of any ServiceAccount of the namespace",
    ),
    Row(
        "Driver: a Secret of a `secretObjects` name that the driver does not manage is never "
        "overwritten; the pod gets a `FailedToCreateSecret` event",
        "overwrites it",
        "another owner's Secret must not be clobbered",
    ),
    Row(
        "Driver: a target path must be a real directory below `--kubelet-root-dir` (default "
        "`/var/lib/kubelet`, the chart's `kubeletRootDir`), reached without following a symbolic link; "
        "spellings with `//` or `/./` are one target",
        "mounts wherever the path leads, links followed; each spelling is locked and mounted apart",
        "a link on the path would put the tmpfs, and later the unmount, somewhere else on the node; two "
        "spellings would stack two tmpfs",
    ),
    Row(
        "Driver: a pod name, namespace or SecretProviderClass name that is not a valid Kubernetes name is "
        "refused (`INVALID_ARGUMENT`, naming the field)",
        "passes it on",
        "names become file names (standalone mode) and API paths; `../x` must be neither",
    ),
    Row(
        "Driver: `--rotation-poll-interval` and `--provider-health-check-interval` under 1s are refused "
        "at start",
        "accepts any duration, 0 too",
        "a period of 0 turns the loop into a busy loop",
    ),
    Row(
        "Driver and sync controller: a `--kubeconfig` (or `$KUBECONFIG`) user that runs a credential "
        "program (`exec`, `auth-provider`) or uses basic auth is refused at the first API call, naming "
        "the field; tokens, token files and client certificates work",
        "runs the program (client-go)",
        "the daemons reach the API server through a small REST client instead of the Kubernetes client "
        "package, 58 MB less in the image; in a pod they use their service account, and a kubeconfig "
        "for a daemon holds a token or a certificate (the workstation tools, `doctor` and "
        "`validate --cluster`, run the program: the `cli` extra)",
    ),
    Row(
        "Sync controller: a failed sync is also a `Warning` event on the SecretSync (the condition's reason "
        "and message), a written Secret a `Normal` `SecretSynced` event",
        "records no events",
        "`kubectl describe secretsync` shows what failed and when the Secret was written, not only the last "
        "condition",
    ),
    Row(
        "Sync controller: a successful sync after a failed one sets `SecretUpdated` back to `True` "
        "(`SecretUpToDate`)",
        "sets it back only when the sync hash changed: after a provider failure with unchanged content, "
        "`SecretUpdated` stays `False` although the Secret is current",
        "the status must say what is true of the Secret",
    ),
    Row(
        "Sync controller: a failed first sync leaves `SecretUpdated` as it started (`Unknown`, "
        "`NoUpdatesAttemptedYet`)",
        "marks it `True` (`SecretUpToDate`) before the create, and keeps it when the create fails",
        "no update was attempted and there is no Secret to be up to date",
    ),
    Row(
        "Sync controller: `--rotation-poll-interval` defaults to 2m, the driver's rotation interval",
        "defaults to 12h",
        "a rotated Key Vault secret reaches its Secret within minutes, as it reaches a pod's volume; a poll "
        "of unchanged content writes nothing",
    ),
    Row(
        "Sync controller: a SecretSync whose Secret labels or annotations have invalid keys or values is "
        "refused when it is created (admission policy `kvmount-secretsync-labels`); one that got in anyway "
        "fails as upstream's (`ControllerPatchError`, the API server's words)",
        "accepts it; its sync fails with `ControllerPatchError`",
        "the mistake shows at `kubectl apply`, in its author's terminal, not in a status nobody reads",
    ),
    Row(
        "Sync controller: its ClusterRole and ClusterRoleBinding are `kvmount-sync-controller` (the "
        "admission policies keep upstream's names)",
        "`secrets-store-sync-controller-manager-role`, `secrets-store-sync-controller-manager-rolebinding`",
        "one chart serves all of kvmount's components and names its objects after it; nothing refers to "
        "the role by name",
    ),
    Row(
        "Driver: a failed publish's message starts with upstream's words (`failed to get "
        "secretproviderclass ns/name, error:`, `failed to mount secrets store objects for pod "
        "ns/name, err:`, `failed to create secret provider class pod status for pod ns/name, "
        "err:`, `Readonly is not true in request`, ...), then names the class, provider or object "
        "and the fix, under a precise gRPC code (`NOT_FOUND`, `FAILED_PRECONDITION`, "
        "`UNAVAILABLE`, ...)",
        "the same words followed by Go's error chain, most under code `Unknown`",
        "alerts and runbooks that match upstream's words keep working; the rest says what to do",
    ),
    Row(
        "Driver: a synced Secret is created with its owners in the same write (the pods' own "
        "owners, e.g. a Deployment's ReplicaSet, or the pod status for a bare pod, as upstream); "
        "an owner is known by its uid",
        "creates the Secret without owners and adds them within 5 s; an owner is known by its "
        "name, so a ReplicaSet recreated under the same name is never added",
        "no window in which a Secret has no owner, and a recreated owner keeps it alive",
    ),
    Row(
        "Driver: with `--enable-secret-rotation` its own loop re-fetches every volume each "
        "`--rotation-poll-interval`, and on a pod's `secrets-store.csi.k8s.io/refresh` annotation, with "
        "the pod's credentials it gets itself; it is a volume's only rotation path where its RBAC allows "
        "(kubelet's re-publish of such a volume fetches nothing, and kvmount's chart sets "
        "`requiresRepublish: false`, or `true` with `rotation.path: kubelet`); what its RBAC refuses "
        "(upstream's chart grants no `serviceaccounts/token` create) is found once at start, logged "
        "once, and those volumes are left to kubelet's re-publish",
        "rotates only on kubelet's re-publish (`requiresRepublish: true`)",
        "rotation also works on a CSIDriver without `requiresRepublish`, and on demand; one path per "
        "volume, because both rotated 27 to 38 % more often and kubelet read each volume's "
        "`nodePublishSecretRef` Secret on every re-publish; with upstream's RBAC it stays as quiet as "
        "upstream's",
    ),
)


def expected_differences() -> dict[str, Row]:
    return {case: row for row in ROWS for case in row.cases}
