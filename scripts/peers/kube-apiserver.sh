#!/usr/bin/env bash
# A real Kubernetes API server for the tests (tests/peers/kube.py):
#   * etcd from Debian (package etcd-server), installed with apt if missing;
#   * kube-apiserver built from the k8s.io/kubernetes Go module, whose version
#     and staging-module pins (replace directives) live in
#     tests/tools/kube-apiserver/go.mod. Bump all of them together there.
# The binary is cached at $KVMOUNT_CACHE/bin/kube-apiserver and rebuilt only
# when its --version differs from go.mod's. A cold build (module downloads +
# compile) took 7.5 min on 2 cores; Go's default build cache makes rebuilds
# a matter of seconds. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KVMOUNT_CACHE:-$HOME/.cache/kvmount}"
module="$root/tests/tools/kube-apiserver"
binary="$cache/bin/kube-apiserver"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v etcd > /dev/null; then
  echo "installing etcd-server (apt)"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -q --no-install-recommends etcd-server > /dev/null; then
    as_root apt-get update -q > /dev/null
    as_root apt-get install -y -q --no-install-recommends etcd-server > /dev/null
  fi
fi
echo "etcd: $(etcd --version | head -1)"

version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$module/go.mod")"
[ -n "$version" ] || { echo "no 'require k8s.io/kubernetes vX' line in $module/go.mod" >&2; exit 1; }
if [ -x "$binary" ] && [ "$("$binary" --version 2> /dev/null || true)" = "Kubernetes $version" ]; then
  echo "kube-apiserver $version: cached at $binary"
  exit 0
fi

if ! command -v go > /dev/null; then
  [ -x /usr/local/go/bin/go ] || { echo "Go is needed to build kube-apiserver" >&2; exit 1; }
  export PATH="$PATH:/usr/local/go/bin"
fi
minor="${version#v1.}"
minor="${minor%%.*}"
echo "building kube-apiserver $version with $(go version | cut -d' ' -f3) (slow the first time)"
mkdir -p "$cache/bin"
start=$SECONDS
(
  cd "$module"
  GOFLAGS=-mod=mod go build -o "$binary.tmp" \
    -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$version \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver
)
mv -f "$binary.tmp" "$binary"
echo "kube-apiserver $version: built in $((SECONDS - start))s at $binary ($("$binary" --version))"
