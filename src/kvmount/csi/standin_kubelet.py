"""A stand-in for kubelet: sends NodePublishVolume / NodeUnpublishVolume as kubelet does.

For the demo and the tests, on machines without kubelet. It builds the
request of an inline (ephemeral) CSI volume with podInfoOnMount: kubelet's
volume id and target path layout, the pod info keys, and the node-publish
secret in ``secrets``. It is a module, not a ``kvmount`` subcommand, because
it is a test tool: nothing on a real node should send publishes but kubelet.

    python -m kvmount.csi.standin_kubelet --endpoint unix:///tmp/csi.sock \\
        publish --class my-class --pod-name web --pod-uid 1234 --kubelet-dir /tmp/kubelet
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import grpc

from kvmount.base import unix_grpc
from kvmount.csi.attributes import EPHEMERAL, POD_NAME, POD_NAMESPACE, POD_UID, SA_NAME
from kvmount.csi.kubelet import target_path, volume_id
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc


def publish_request(
    *,
    target: str,
    class_name: str,
    pod_name: str,
    pod_namespace: str,
    pod_uid: str,
    service_account: str = "default",
    volume_name: str = "secrets-store-inline",
    secrets: Mapping[str, str] | None = None,
    attributes: Mapping[str, str] | None = None,
    readonly: bool = True,
) -> csi.NodePublishVolumeRequest:
    context = {
        "secretProviderClass": class_name,
        POD_NAME: pod_name,
        POD_NAMESPACE: pod_namespace,
        POD_UID: pod_uid,
        SA_NAME: service_account,
        EPHEMERAL: "true",
        **(attributes or {}),
    }
    mode = csi.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
    return csi.NodePublishVolumeRequest(
        volume_id=volume_id(pod_uid, volume_name),
        target_path=target,
        volume_capability=csi.VolumeCapability(
            mount=csi.VolumeCapability.MountVolume(), access_mode=csi.VolumeCapability.AccessMode(mode=mode)
        ),
        readonly=readonly,
        secrets=dict(secrets or {}),
        volume_context=context,
    )


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvmount.csi.standin_kubelet", description=__doc__)
    parser.add_argument("--endpoint", default="unix:///tmp/csi.sock")
    parser.add_argument("--kubelet-dir", default="/var/lib/kubelet")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (kubelet allows 2m)")
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("publish", "unpublish"):
        p = sub.add_parser(action)
        p.add_argument("--pod-uid", required=True)
        p.add_argument("--volume-name", default="secrets-store-inline")
        if action == "publish":
            p.add_argument("--class", dest="class_name", required=True, help="secretProviderClass")
            p.add_argument("--pod-name", required=True)
            p.add_argument("--pod-namespace", default="default")
            p.add_argument("--service-account", default="default")
            p.add_argument("--secret", action="append", default=[], help="KEY=VALUE, node-publish secret")
            p.add_argument("--attribute", action="append", default=[], help="KEY=VALUE volume attribute")
    args = parser.parse_args(argv)
    target = target_path(args.kubelet_dir, args.pod_uid, args.volume_name)
    with unix_grpc.dial(args.endpoint) as channel:
        node = csi_grpc.NodeStub(channel)
        try:
            if args.action == "publish":
                # kubelet creates the parent; the driver creates the target itself.
                os.makedirs(os.path.dirname(target), exist_ok=True)
                request = publish_request(
                    target=target,
                    class_name=args.class_name,
                    pod_name=args.pod_name,
                    pod_namespace=args.pod_namespace,
                    pod_uid=args.pod_uid,
                    service_account=args.service_account,
                    volume_name=args.volume_name,
                    secrets=_pairs(args.secret, "--secret"),
                    attributes=_pairs(args.attribute, "--attribute"),
                )
                node.NodePublishVolume(request, timeout=args.timeout)
            else:
                node.NodeUnpublishVolume(
                    csi.NodeUnpublishVolumeRequest(
                        volume_id=volume_id(args.pod_uid, args.volume_name), target_path=target
                    ),
                    timeout=args.timeout,
                )
        except grpc.RpcError as err:
            print(f"{args.action} failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
