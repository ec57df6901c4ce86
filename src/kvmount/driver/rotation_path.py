"""Which volumes the driver's reconciler may rotate, as its RBAC allows: asked once at start.

For a rotation the reconciler gets what kubelet would send: the pod's nodePublishSecretRef
Secret (``get secrets``) and, for the CSIDriver's ``tokenRequests``, service account tokens
(``create serviceaccounts/token``). Upstream's chart grants neither (``secrets`` only with sync
on), so under it the volumes that need them are left to kubelet's re-publish, quietly, instead
of a refused request and a warning event per pod and poll. Where the reconciler may serve a
volume, it is that volume's only rotation path: kubelet's re-publish of it fetches nothing
(driver/republish.py).

With rotation on and ``list`` and ``watch`` of Secrets granted too, the nodePublishSecretRef
Secrets labelled ``secrets-store.csi.k8s.io/used=true`` are read from a watch (as upstream v1.5
read them), not by a GET per rotation.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from kvmount.csi.attributes import SA_TOKENS
from kvmount.driver.request import VolumeRequest, secrets_with_tokens
from kvmount.kube.api_store import KubeStore
from kvmount.kube.errors import StoreError

log = logging.getLogger(__name__)


class RotationPath(enum.Enum):
    """How a volume's content is fetched again, as the driver's permissions allow."""

    DRIVER = "driver"  # the reconciler, with credentials it gets itself
    KUBELET = "kubelet"  # kubelet's re-publish (requiresRepublish), with the credentials kubelet sends
    NONE = "none"  # neither: credentials refused and no requiresRepublish


class SecretReads(enum.Enum):
    """How the reconciler reads a nodePublishSecretRef Secret."""

    WATCH = "watch"  # labelled ones from a watch of this node's (a GET for the others)
    GET = "get"  # a GET per rotation


@dataclass(frozen=True)
class Grants:
    """What the reconciler may fetch for a pod; decided once at start."""

    tokens: bool = True  # create serviceaccounts/token
    secrets: bool = True  # get secrets (nodePublishSecretRef)
    watch_secrets: bool = False  # list and watch secrets, with rotation on

    def cover(self, req: VolumeRequest) -> bool:
        """Whether the reconciler may get again the credentials kubelet sent with ``req``."""
        sent = secrets_with_tokens(req)
        tokens = sent.pop(SA_TOKENS, None)
        return (self.secrets or not sent) and (self.tokens or not tokens)


def choose_path(api: KubeStore, rotating: bool) -> tuple[RotationPath, Grants]:
    """Ask once what the reconciler may fetch (``rotating``: the periodic reconciler runs, not
    only the refresh annotation), log the rotation path that leaves, once."""
    try:
        driver = api.csidriver() or {}
        needs_tokens = bool(driver.get("tokenRequests"))
        tokens = not needs_tokens or api.may("create", "serviceaccounts", "token")
        secrets = api.may("get", "secrets")
        watch = rotating and secrets and api.may("list", "secrets") and api.may("watch", "secrets")
    except StoreError as err:
        # The API cannot say now: try everything, as before; a refusal shows per volume.
        log.warning("cannot review the driver's permissions for rotation", extra={"error": str(err)})
        return RotationPath.DRIVER, Grants()
    grants = Grants(tokens, secrets, watch)
    reads = {"node_publish_secrets": (SecretReads.WATCH if watch else SecretReads.GET).value}
    asked = (("create serviceaccounts/token", tokens), ("get secrets", secrets))
    refused = [what for what, granted in asked if not granted]
    if not refused:
        log.info("rotation path", extra={"path": RotationPath.DRIVER.value, **reads})
        return RotationPath.DRIVER, grants
    needs = "service account tokens" if not tokens else "a nodePublishSecretRef"
    if driver.get("requiresRepublish"):
        detail = f"volumes that need {needs} are rotated by kubelet's re-publish"
        path, level = RotationPath.KUBELET, logging.INFO
    else:
        detail = (
            f"volumes that need {needs} are not rotated: grant the driver's ServiceAccount "
            f"{' and '.join(refused)}, or set requiresRepublish: true in the CSIDriver"
        )
        path, level = RotationPath.NONE, logging.WARNING
    extra = {"path": path.value, "refused": ", ".join(refused), "detail": detail, **reads}
    log.log(level, "rotation path", extra=extra)
    return path, grants
