#!/usr/bin/env bash
# Installs helm (helm.sh/helm/v3) into $KVMOUNT_CACHE/bin, for the test that
# renders upstream's own charts with `helm template` (tests/compat). Built with
# `go install` from the module proxy. Idempotent: does nothing when the pinned
# version is already there.
set -euo pipefail
version="v3.22.0"
cache="${KVMOUNT_CACHE:-$HOME/.cache/kvmount}"
bin="$cache/bin"
stamp="$bin/.helm-$version"
if [ -x "$bin/helm" ] && [ -f "$stamp" ]; then
  exit 0
fi
if ! command -v go > /dev/null; then
  [ -x /usr/local/go/bin/go ] || { echo "helm: needs Go (https://go.dev/dl/) to build helm.sh/helm/v3" >&2; exit 1; }
  export PATH="$PATH:/usr/local/go/bin"
fi
mkdir -p "$bin"
GOBIN="$bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$version"
rm -f "$bin"/.helm-v*
touch "$stamp"
echo "helm $version installed in $bin"
