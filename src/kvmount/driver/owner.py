"""Which workload a pod really belongs to, for restart on rotation.

A pod's ownerReferences are written by whoever creates the pod: anyone who may
create pods can name any Deployment of the namespace as the controller. So the
claim is checked link by link, as the workload controllers themselves decide
what is theirs: each owner exists with the uid the reference names, owns pods
the way its kind does (a Deployment through a ReplicaSet, a StatefulSet or
DaemonSet directly), and its selector matches the pod's labels. Restart also
asks that the workload's own pod template mounts the rotated class
(``mounts_class``), which no pod can forge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Reads one apps/v1 object (kind, name, namespace); None when it does not exist.
Reader = Callable[[str, str, str], "dict[str, Any] | None"]
# How each restartable kind owns its pods.
_THROUGH_REPLICASET = ("Deployment",)
_DIRECT = ("StatefulSet", "DaemonSet")
WORKLOADS = _THROUGH_REPLICASET + _DIRECT


@dataclass(frozen=True)
class Claim:
    """The workload a pod's controller reference leads to, and why the claim fails ("" if it holds)."""

    kind: str
    doc: dict[str, Any]
    problem: str

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def controller(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in (doc.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return dict(ref)
    return None


def claim(read: Reader, pod: Mapping[str, Any]) -> Claim | None:
    """The claimed workload of ``pod`` (None: none is named, or it is gone), checked link by link."""
    namespace = str(pod["metadata"]["namespace"])
    labels = _labels(pod)
    ref = controller(pod)
    problem = ""
    if ref is not None and ref.get("kind") == "ReplicaSet":
        replica_set = read("ReplicaSet", str(ref.get("name") or ""), namespace)
        if replica_set is None:
            return None
        problem = _link_problem(ref, replica_set, labels)
        ref = controller(replica_set)
        if ref is not None and ref.get("kind") not in _THROUGH_REPLICASET and ref.get("kind") in WORKLOADS:
            problem = problem or f"a {ref['kind']} owns pods directly, never through a ReplicaSet"
    elif ref is not None and ref.get("kind") in _THROUGH_REPLICASET:
        problem = f"a {ref['kind']} owns pods only through a ReplicaSet, and this pod names it directly"
    if ref is None or ref.get("kind") not in WORKLOADS:
        return None
    kind = str(ref["kind"])
    found = read(kind, str(ref.get("name") or ""), namespace)
    if found is None:
        return None
    return Claim(kind, found, problem or _link_problem(ref, found, labels))


def mounts_class(workload: Mapping[str, Any], driver: str, class_name: str) -> bool:
    """Whether the workload's pod template has a volume of this driver with this SecretProviderClass."""
    spec = (((workload.get("spec") or {}).get("template") or {}).get("spec")) or {}
    for volume in spec.get("volumes") or []:
        csi = (volume or {}).get("csi") or {}
        if (
            csi.get("driver") == driver
            and (csi.get("volumeAttributes") or {}).get("secretProviderClass") == class_name
        ):
            return True
    return False


def selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels. An empty or missing one
    selects nothing here: apps/v1 refuses it, so it never stands for a real workload's pods."""
    if not isinstance(selector, dict):
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(_expression_holds(e, labels) for e in expressions)


def _expression_holds(expression: Any, labels: Mapping[str, str]) -> bool:
    if not isinstance(expression, dict):
        return False
    key, operator, values = (
        str(expression.get("key")),
        expression.get("operator"),
        expression.get("values") or [],
    )
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def _labels(doc: Mapping[str, Any]) -> dict[str, str]:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _link_problem(ref: Mapping[str, Any], owner: Mapping[str, Any], pod_labels: Mapping[str, str]) -> str:
    """Why ``owner`` is not the real owner the reference claims ("" when it is)."""
    meta = owner.get("metadata") or {}
    what = f"{ref.get('kind')} {meta.get('name')}"
    if ref.get("uid") != meta.get("uid"):
        return f"the owner reference to {what} carries another uid than {what} has"
    if not selects((owner.get("spec") or {}).get("selector"), pod_labels):
        return f"the selector of {what} does not match this pod's labels"
    return ""
