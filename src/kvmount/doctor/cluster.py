"""Why is this pod stuck? What the API server knows: install, pod, volumes, classes, identity inputs.

Each check reads one thing and says, in one row, what is wrong and what to
do. Reads only; the one write is a TokenRequest for workload identity (what
kubelet would ask for), and its token is handed to the Key Vault checks, never
shown. A Secret's keys are looked at, never its values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, POD_UID, SA_NAME, SA_TOKENS
from kvmount.doctor.report import Row, Verdict
from kvmount.driver.events import EventReason
from kvmount.keyvault import IDENTITY_BINDING_AUDIENCE, TOKEN_AUDIENCE, IdentityMode, parse_mount
from kvmount.kube.api_store import KubeStore
from kvmount.kube.classes import CLASSES, GROUP, VERSION
from kvmount.kube.errors import StoreError, StoreReason
from kvmount.kube.podstatus import POD_STATUSES
from kvmount.validate.checks import Severity, check_class, stand_in
from kvmount.validate.document import documents

DRIVER = "secrets-store.csi.k8s.io"
CRDS = (f"{CLASSES}.{GROUP}", f"{POD_STATUSES}.{GROUP}")
DRIVER_ACCOUNT = "kube-system/secrets-store-csi-driver"
T = TypeVar("T")


class Unreadable(Exception):
    """The doctor itself may not read something, or the API server is unreachable."""


@dataclass
class Volume:
    """A pod's secrets-store volume whose class is valid: what a mount would be given."""

    name: str
    class_name: str
    attributes: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    source: str = ""


def get(what: str, call: Callable[[], T]) -> T | None:
    """The object, or None when it does not exist; Unreadable when the doctor may not see it."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call()
    except ApiException as err:
        if err.status == 404:
            return None
        raise Unreadable(f"{what}: HTTP {err.status} {err.reason} (doctor's own permissions)") from None
    except (HTTPError, OSError) as err:
        raise Unreadable(f"{what}: API server unreachable ({type(err).__name__})") from None


class ClusterDoctor:
    def __init__(self, store: KubeStore, driver: str = DRIVER, driver_account: str = DRIVER_ACCOUNT) -> None:
        api = store.api_client()  # first: it says which extra to install when the package is missing
        from kubernetes import client

        self.store = store
        self.driver = driver
        self.driver_account = driver_account
        self.core: Any = client.CoreV1Api(api)
        self.storage: Any = client.StorageV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.extensions: Any = client.ApiextensionsV1Api(api)
        self.authorization: Any = client.AuthorizationV1Api(api)

    def install_rows(self) -> Iterator[Row]:
        """The cluster-wide pieces: the CRDs and the CSIDriver object."""
        for crd in CRDS:
            if self._crd(crd) is None:
                yield Row("CRD", Verdict.FAIL, f"{crd} is not installed", "kubectl apply -f deploy/crds/")
            else:
                yield Row("CRD", Verdict.OK, f"{crd} installed")
        if self._csi_driver(self.driver) is None:
            yield Row(
                "CSIDriver",
                Verdict.FAIL,
                f"no CSIDriver object {self.driver}: kubelet will not call the driver",
                "kubectl apply -f deploy/driver/csidriver.yaml",
            )
        else:
            yield Row("CSIDriver", Verdict.OK, f"{self.driver} installed")

    def _crd(self, name: str) -> Any:
        return get(f"CRD {name}", lambda: self.extensions.read_custom_resource_definition(name))

    def _csi_driver(self, name: str) -> Any:
        return get(f"CSIDriver {name}", lambda: self.storage.read_csi_driver(name))

    def pod_rows(self, namespace: str, name: str, volumes: list[Volume]) -> Iterator[Row]:
        """Rows for the pod; the volumes whose Key Vault access can be checked are added to ``volumes``."""
        pod: Any = get(f"pod {namespace}/{name}", lambda: self.core.read_namespaced_pod(name, namespace))
        where = f"pod {namespace}/{name}"
        if pod is None:
            yield Row(
                "pod", Verdict.FAIL, f"{where} not found", f"check the name (kubectl get pods -n {namespace})"
            )
            return
        node = pod.spec.node_name or ""
        yield Row("pod", Verdict.INFO, f"{where}: {pod.status.phase}, node {node or '(none)'}")
        yield from self._node_rows(node)
        ours = 0
        for volume in pod.spec.volumes or []:
            csi = volume.csi
            if csi is None:
                continue
            if csi.driver != self.driver:
                if "secrets-store" in csi.driver and self._csi_driver(csi.driver) is None:
                    yield Row(
                        f"volume {volume.name}",
                        Verdict.FAIL,
                        f"uses CSI driver {csi.driver!r}, which is not installed",
                        f"set driver: {self.driver}",
                    )
                continue
            ours += 1
            yield from self._volume_rows(pod, volume, volumes)
        if not ours:
            yield Row(
                "volumes", Verdict.INFO, f"no {self.driver} volume: this pod does not wait for the driver"
            )
        yield from self._event_rows(namespace, name)

    def _node_rows(self, node: str) -> Iterator[Row]:
        if not node:
            yield Row(
                "node",
                Verdict.FAIL,
                "the pod is not scheduled yet: no volume is mounted before it has a node",
                "see the scheduler's events (kubectl describe pod)",
            )
            return
        csinode: Any = get(f"CSINode {node}", lambda: self.storage.read_csi_node(node))
        drivers = [d.name for d in (csinode.spec.drivers or [])] if csinode is not None else []
        if self.driver not in drivers:
            yield Row(
                "driver on node",
                Verdict.FAIL,
                f"{self.driver} is not registered on node {node} "
                f"(its CSINode lists: {', '.join(drivers) or 'none'})",
                f"check the driver DaemonSet's pod on {node} and its kubelet registration socket",
            )
        else:
            yield Row("driver on node", Verdict.OK, f"{self.driver} registered on node {node}")

    def _volume_rows(self, pod: Any, volume: Any, volumes: list[Volume]) -> Iterator[Row]:
        namespace, check = pod.metadata.namespace, f"volume {volume.name}"
        attributes = dict(volume.csi.volume_attributes or {})
        class_name = attributes.get("secretProviderClass", "")
        if not class_name:
            yield Row(
                check, Verdict.FAIL, "has no volumeAttributes.secretProviderClass", "name the class there"
            )
            return
        what = f"SecretProviderClass {namespace}/{class_name}"
        doc: Any = get(
            what,
            lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, CLASSES, class_name),
        )
        if doc is None:
            elsewhere = self._namespaces_with_class(class_name)
            hint = f" (it exists in namespace {', '.join(elsewhere)})" if elsewhere else ""
            yield Row(
                "class",
                Verdict.FAIL,
                f"{what} not found{hint}",
                f"create it in namespace {namespace}: a class serves only pods of its own namespace",
            )
            return
        rows = list(class_rows(what, doc))
        yield from rows
        if any(row.verdict is Verdict.FAIL for row in rows):
            return
        parameters = {str(k): str(v) for k, v in ((doc.get("spec") or {}).get("parameters") or {}).items()}
        found, identity_rows = self._volume_for(pod, volume, class_name, parameters)
        yield from identity_rows
        if (doc.get("spec") or {}).get("secretObjects"):
            yield from self._sync_rows(namespace)
        yield from self._status_rows(pod, class_name)
        if not any(row.verdict is Verdict.FAIL for row in identity_rows):
            volumes.append(found)

    def identity_for(
        self, namespace: str, name: str, parameters: dict[str, str]
    ) -> tuple[Volume | None, list[Row]]:
        """A class's parameters as a mount of this pod would get them (`doctor --class X --pod P`):
        the pod's token, or the node-publish Secret of its first secrets-store volume."""
        pod: Any = get(f"pod {namespace}/{name}", lambda: self.core.read_namespaced_pod(name, namespace))
        if pod is None:
            return None, [Row("pod", Verdict.FAIL, f"pod {namespace}/{name} not found")]
        ours = [v for v in pod.spec.volumes or [] if v.csi is not None and v.csi.driver == self.driver]
        volume = ours[0] if ours else None
        class_name = (volume.csi.volume_attributes or {}).get("secretProviderClass", "") if volume else ""
        return self._volume_for(pod, volume, class_name, parameters)

    def _volume_for(
        self, pod: Any, volume: Any, class_name: str, parameters: dict[str, str]
    ) -> tuple[Volume, list[Row]]:
        account = pod.spec.service_account_name or "default"
        attributes = {
            **parameters,
            POD_NAME: pod.metadata.name,
            POD_NAMESPACE: pod.metadata.namespace,
            POD_UID: pod.metadata.uid,
            SA_NAME: account,
        }
        found = Volume(volume.name if volume else "", class_name, attributes)
        return found, list(self._identity_rows(pod, volume, identity_mode(parameters), found))

    def _namespaces_with_class(self, name: str) -> list[str]:
        listed: Any = get(
            "SecretProviderClasses", lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, CLASSES)
        )
        items = (listed or {}).get("items") or []
        return sorted({i["metadata"]["namespace"] for i in items if i["metadata"]["name"] == name})

    def _identity_rows(self, pod: Any, volume: Any, mode: IdentityMode, found: Volume) -> Iterator[Row]:
        namespace = pod.metadata.namespace
        if mode in (IdentityMode.WORKLOAD, IdentityMode.TOKEN_PROXY):
            audience = TOKEN_AUDIENCE if mode is IdentityMode.WORKLOAD else IDENTITY_BINDING_AUDIENCE
            yield from self._workload_rows(pod, found, audience)
        elif mode is IdentityMode.SERVICE_PRINCIPAL:
            ref = volume.csi.node_publish_secret_ref if volume is not None else None
            ref = ref.name if ref is not None else ""
            if not ref:
                yield Row(
                    "identity",
                    Verdict.FAIL,
                    f"class {found.class_name} uses a service principal, but volume {found.name} has no "
                    "nodePublishSecretRef",
                    "add nodePublishSecretRef naming a Secret with clientid and clientsecret, or set "
                    "clientID (workload identity) in the class",
                )
                return
            try:
                secret = self.store.node_publish_secret(namespace, ref)
            except StoreError as err:
                fix = f"create Secret {ref} in namespace {namespace} with clientid and clientsecret"
                yield Row(
                    "identity",
                    Verdict.FAIL,
                    str(err),
                    fix if err.reason is StoreReason.NODE_PUBLISH_SECRET_NOT_FOUND else "",
                )
                return
            missing = [k for k in ("clientid", "clientsecret") if k not in {key.lower() for key in secret}]
            if missing:
                yield Row(
                    "identity",
                    Verdict.FAIL,
                    f"Secret {namespace}/{ref} (nodePublishSecretRef) has no {' or '.join(missing)}",
                    f"add {' and '.join(missing)} to the Secret (keys in any case)",
                )
                return
            found.secrets, found.source = secret, f"nodePublishSecretRef {namespace}/{ref}"

    def _workload_rows(self, pod: Any, found: Volume, audience: str) -> Iterator[Row]:
        namespace, account = pod.metadata.namespace, found.attributes[SA_NAME]
        driver: Any = self._csi_driver(self.driver)
        audiences = [r.audience for r in ((driver.spec.token_requests if driver else None) or [])]
        if driver is not None and audience not in audiences:
            yield Row(
                "identity",
                Verdict.FAIL,
                f"class {found.class_name} uses workload identity, but CSIDriver {self.driver} requests no "
                f"token for {audience}",
                f"add tokenRequests: [{{audience: {audience}}}] to the CSIDriver "
                "(deploy/driver/csidriver.yaml)",
            )
            return
        sa = get(
            f"ServiceAccount {namespace}/{account}",
            lambda: self.core.read_namespaced_service_account(account, namespace),
        )
        if sa is None:
            yield Row(
                "identity",
                Verdict.FAIL,
                f"ServiceAccount {namespace}/{account} (the pod's serviceAccountName) not found",
                "create it and federate it with the class's clientID, or fix serviceAccountName",
            )
            return
        try:
            tokens = self.store.tokens_for(
                namespace, account, [(audience, 3600)], bound_pod=(pod.metadata.name, pod.metadata.uid)
            )
        except StoreError as err:
            yield Row("identity", Verdict.SKIP, f"no service account token for the check: {err}")
            return
        found.attributes[SA_TOKENS] = tokens
        found.source = f"token of ServiceAccount {namespace}/{account}"

    def _sync_rows(self, namespace: str) -> Iterator[Row]:
        account_ns, account = self.driver_account.split("/", 1)
        missing = [
            verb
            # What secretsync/writer.py does: read, then create or replace (never patch).
            for verb in ("get", "create", "update")
            if not self._may(account_ns, account, verb, namespace)
        ]
        if missing:
            yield Row(
                "sync RBAC",
                Verdict.FAIL,
                f"ServiceAccount {self.driver_account} may not {'/'.join(missing)} Secrets in {namespace}: "
                "secretObjects cannot be synced",
                "kubectl apply -f deploy/driver/rbac.yaml (or grant those verbs on secrets)",
            )
        else:
            yield Row(
                "sync RBAC",
                Verdict.OK,
                f"ServiceAccount {self.driver_account} may sync Secrets in {namespace}",
            )

    def _may(self, account_ns: str, account: str, verb: str, namespace: str) -> bool:
        body = {
            "spec": {
                "user": f"system:serviceaccount:{account_ns}:{account}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account_ns}"],
                "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": "secrets"},
            }
        }
        review: Any = get(
            "SubjectAccessReview", lambda: self.authorization.create_subject_access_review(body)
        )
        return bool(review is not None and review.status.allowed)

    def _status_rows(self, pod: Any, class_name: str) -> Iterator[Row]:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        listed: Any = get(
            "SecretProviderClassPodStatuses",
            lambda: self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, POD_STATUSES),
        )
        for item in (listed or {}).get("items") or []:
            status = item.get("status") or {}
            ours = status.get("podName") == name and status.get("secretProviderClassName") == class_name
            if ours and status.get("mounted"):
                count = len(status.get("objects") or [])
                yield Row("pod status", Verdict.OK, f"{item['metadata']['name']}: mounted, {count} objects")
                return
        yield Row(
            "pod status", Verdict.INFO, f"no mounted SecretProviderClassPodStatus for class {class_name} yet"
        )

    def _event_rows(self, namespace: str, name: str) -> Iterator[Row]:
        listed: Any = get(
            "events",
            lambda: self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}"
            ),
        )
        # kubelet's reason for a failed mount, and the driver's.
        reasons = ("FailedMount", EventReason.FAILED_TO_MOUNT)
        failed = [e for e in (listed.items if listed else []) if e.reason in reasons]
        if failed:
            last = max(
                failed, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp
            )
            count = sum(e.count or 1 for e in failed)
            yield Row(
                "events",
                Verdict.WARN,
                f"{last.reason} x{count}, last: {' '.join(last.message.split())[:400]}",
            )


def identity_mode(parameters: dict[str, str]) -> IdentityMode:
    """The identity the provider chooses for these parameters (the class must be valid)."""
    return parse_mount(*stand_in(parameters)).identity


def class_rows(what: str, doc: dict[str, Any]) -> Iterator[Row]:
    """The class through validate's checks: one row per finding, errors first."""
    clean: dict[str, Any] = {k: doc[k] for k in ("apiVersion", "kind", "spec") if k in doc}
    clean["metadata"] = {k: v for k, v in (doc.get("metadata") or {}).items() if k in ("name", "namespace")}
    findings = []
    for node in documents(yaml.safe_dump(clean)):
        findings += check_class(node) or []
    if not findings:
        yield Row("class", Verdict.OK, f"{what} is valid")
    for finding in sorted(findings, key=lambda f: f.severity is not Severity.ERROR):
        verdict = Verdict.FAIL if finding.severity is Severity.ERROR else Verdict.WARN
        yield Row("class", verdict, f"{what}: {finding.field}: {finding.message}")
