"""The volume attributes kubelet adds to a CSI publish (podInfoOnMount, tokenRequests), by name.

Shared by everything that builds or reads a provider's Mount attributes: the
driver, the provider, the FlexVolume adapter and the sync controller.
"""

from __future__ import annotations

POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SA_NAME = "csi.storage.k8s.io/serviceAccount.name"
# JSON {audience: {token, expirationTimestamp}}; a secret: never logged or stored.
SA_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
