#!/usr/bin/env bash
# Upstream's Secrets Store CSI driver v1.5.6, the informer-fed design, for
# bench/api_load.py only (not a test peer: scripts/install-peers builds it with
# --bench, and the bench builds it on demand). The same build as
# ../upstream-driver.sh: cmd/secrets-store-csi-driver from the module proxy's
# source into $KVMOUNT_CACHE/bin/upstream-secrets-store-csi-driver-v1.5.6,
# monis.app/mlog replaced by tests/peers/mlog (v1.5.x calls the same functions).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib/go-module-peer.sh"
mlog="$(cd "$here/../../../tests/peers/mlog" && pwd)"
GO_PEER_STAMP="mlog $(cat "$mlog"/go.mod "$mlog"/*.go | sha256sum | cut -c1-16)"
go_module_peer upstream-secrets-store-csi-driver-v1.5.6 \
  sigs.k8s.io/secrets-store-csi-driver v1.5.6 cmd/secrets-store-csi-driver \
  "-replace=monis.app/mlog=$mlog"
