#!/usr/bin/env bash
# Upstream's Secrets Store CSI driver as a test peer (tests/peers/upstream.py):
# cmd/secrets-store-csi-driver of sigs.k8s.io/secrets-store-csi-driver, built
# from the module proxy's source into
# $KVMOUNT_CACHE/bin/upstream-secrets-store-csi-driver (see
# lib/go-module-peer.sh). The proxy refuses the driver's logging dependency
# monis.app/mlog, so the build replaces it with our stand-in in
# tests/peers/mlog. Idempotent. A build with an empty Go build cache took
# 2 min (idle) to 4 min (busy) on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib/go-module-peer.sh"
mlog="$(cd "$here/../../tests/peers/mlog" && pwd)"
GO_PEER_STAMP="mlog $(cat "$mlog"/go.mod "$mlog"/*.go | sha256sum | cut -c1-16)"
go_module_peer upstream-secrets-store-csi-driver \
  sigs.k8s.io/secrets-store-csi-driver v1.6.1 cmd/secrets-store-csi-driver \
  "-replace=monis.app/mlog=$mlog"
