#!/usr/bin/env bash
# Installs cryptsetup (Debian's cryptsetup-bin) for the KMS tests, which
# luksFormat and unlock a plain file with the passphrases kvmount stores.
# Idempotent: does nothing when cryptsetup is already on the PATH.
set -euo pipefail
if command -v cryptsetup >/dev/null 2>&1 || [ -x /usr/sbin/cryptsetup ] || [ -x /sbin/cryptsetup ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cryptsetup: install it with your package manager (Debian/Ubuntu: cryptsetup-bin)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends cryptsetup-bin
echo "cryptsetup installed: $(cryptsetup --version)"
