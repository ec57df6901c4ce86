#!/usr/bin/env bash
# The kvmount images, built from this checkout by scripts/build-image (Debian
# packages and buildah only; cached, rebuilt when the sources change), for
# tests/image. A build takes minutes, so outside CI it runs only when asked:
# KVMOUNT_BUILD_IMAGE=1 (or run scripts/build-image yourself); the tests that
# need the archives skip, naming this script, when they are missing, and fail
# under CI.
set -euo pipefail
# CI as tests/support/ci.py's in_ci() reads it: set, and not 0/false/no.
case "$(echo "${CI:-}" | tr '[:upper:]' '[:lower:]' | tr -d ' ')" in
  "" | 0 | false | no)
    if [ "${KVMOUNT_BUILD_IMAGE:-}" != 1 ]; then
      echo "kvmount images: not built here (KVMOUNT_BUILD_IMAGE=1 or scripts/build-image builds them)"
      exit 0
    fi
    ;;
esac
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/build-image"
