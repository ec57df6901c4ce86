#!/usr/bin/env bash
# Installs csi-sanity (the CSI conformance suite) into $KVMOUNT_CACHE/bin.
# Idempotent: does nothing when the pinned version is already there.
set -euo pipefail
version="v5.5.0"
cache="${KVMOUNT_CACHE:-$HOME/.cache/kvmount}"
bin="$cache/bin"
stamp="$bin/.csi-sanity-$version"
if [ -x "$bin/csi-sanity" ] && [ -f "$stamp" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "csi-sanity: needs Go (https://go.dev/dl/) to build github.com/kubernetes-csi/csi-test" >&2
  exit 1
fi
mkdir -p "$bin"
GOBIN="$bin" go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$version"
touch "$stamp"
echo "csi-sanity $version installed in $bin"
