"""kubelet's periodic NodePublishVolume of a live volume (CSIDriver ``requiresRepublish: true``):
whether it fetches again.

One rotation path per volume (issue 26): a volume the driver's reconciler rotates is never
fetched by kubelet's re-publish too (both together rotated 27-38 % more often than either); the
others (those whose credentials the driver may not get, or every volume while the reconciler has
not started) are fetched by it once the rotation interval has passed since the last fetch. The
decision reads only memory: a re-publish that does not fetch costs no provider call and no API
request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kvmount.driver.request import VolumeRequest
from kvmount.driver.volumes import VolumeState

# Whether the reconciler rotates the volume of this request; must answer from memory alone.
Reconciled = Callable[[VolumeRequest], bool]


def _never(_: VolumeRequest) -> bool:
    return False


class Republish:
    """``interval`` None: rotation is off, and a re-publish of a live volume never fetches."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self._reconciled: Reconciled = _never

    def hand_to(self, reconciled: Reconciled) -> None:
        """From now on the volumes ``reconciled`` names are the reconciler's alone."""
        self._reconciled = reconciled

    def fetches(self, req: VolumeRequest, previous: VolumeState | None) -> bool:
        """Whether a re-publish of the live volume of ``req``, last fetched as ``previous`` says
        (None: unknown to the driver, e.g. its state was lost), fetches now."""
        if self.interval is None:
            return False
        if previous is None:
            return True  # the reconciler knows only the volumes in its registry
        if self._reconciled(req):
            return False
        return time.time() - previous.refreshed_at >= self.interval
