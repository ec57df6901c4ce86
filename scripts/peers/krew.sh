#!/usr/bin/env bash
# krew (sigs.k8s.io/krew), kubectl's plugin manager, for the test that installs
# kvmount's plugin archive with its manifest (tests/image/test_krew.py), the way
# `kubectl krew install` does for a user. Built from the module proxy's source
# into $KVMOUNT_CACHE/bin/kubectl-krew (lib/go-module-peer.sh). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib/go-module-peer.sh"
go_module_peer kubectl-krew sigs.k8s.io/krew v0.4.3 cmd/krew
