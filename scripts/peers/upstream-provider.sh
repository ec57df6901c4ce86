#!/usr/bin/env bash
# Upstream's Azure provider as a test peer (tests/peers/upstream.py): the cmd
# package of github.com/Azure/secrets-store-csi-driver-provider-azure, built
# from the module proxy's source into $KVMOUNT_CACHE/bin/upstream-azure-provider
# (see lib/go-module-peer.sh). Idempotent. A build with an empty Go build
# cache took 1 min (idle) to 3 min (busy) on 2 cores.
set -euo pipefail
. "$(dirname "$0")/lib/go-module-peer.sh"
go_module_peer upstream-azure-provider \
  github.com/Azure/secrets-store-csi-driver-provider-azure v1.8.2 cmd
