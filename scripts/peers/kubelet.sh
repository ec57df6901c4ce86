#!/usr/bin/env bash
# A real node for the tests (tests/node/): kubelet and kube-controller-manager,
# a container runtime and two local images. Everything from package registries:
#   * kubelet and kube-controller-manager built from the same k8s.io/kubernetes
#     module as kube-apiserver. Its version and staging-module pins live only in
#     tests/tools/kube-apiserver/go.mod; this script copies that go.mod/go.sum to
#     a scratch module under $KVMOUNT_CACHE and lets Go add the few requirements
#     the two commands need beyond kube-apiserver's (nothing in the repo changes);
#   * containerd, runc, buildah and busybox-static from Debian (apt). crun is not
#     used: it fails on hybrid cgroup hierarchies like this sandbox's;
#   * the images, since no registry is reachable: "kvmount.test/busybox" (a
#     scratch image holding busybox-static) and "kvmount.test/pause" (the same
#     binary running `sleep` forever as kubelet's sandbox), built with buildah
#     (vfs storage under $KVMOUNT_CACHE, nothing in /var/lib/containers) and
#     saved as docker archives that tests/node imports into its own containerd.
# Binaries are rebuilt only when their --version differs from go.mod's, the
# images only when busybox-static's version changes. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KVMOUNT_CACHE:-$HOME/.cache/kvmount}"
pins="$root/tests/tools/kube-apiserver"
bin="$cache/bin"
mkdir -p "$bin"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ------------------------------------------------------------------ Debian packages
packages=(containerd runc buildah busybox-static)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2> /dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null; then
    as_root apt-get update -q > /dev/null
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null
  fi
fi
echo "containerd: $(containerd --version | cut -d' ' -f3), runc: $(runc --version | head -1 | cut -d' ' -f3)"

# ------------------------------------------------------------------ kubelet, kube-controller-manager
version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$pins/go.mod")"
[ -n "$version" ] || { echo "no 'require k8s.io/kubernetes vX' line in $pins/go.mod" >&2; exit 1; }
minor="${version#v1.}"
minor="${minor%%.*}"
wanted=()
for command in kubelet kube-controller-manager; do
  if [ -x "$bin/$command" ] && [ "$("$bin/$command" --version 2> /dev/null || true)" = "Kubernetes $version" ]; then
    echo "$command $version: cached at $bin/$command"
  else
    wanted+=("$command")
  fi
done
if [ "${#wanted[@]}" -gt 0 ]; then
  if ! command -v go > /dev/null; then
    [ -x /usr/local/go/bin/go ] || { echo "Go is needed to build ${wanted[*]}" >&2; exit 1; }
    export PATH="$PATH:/usr/local/go/bin"
  fi
  module="$cache/build/kubernetes-node"
  mkdir -p "$module"
  cp "$pins/go.mod" "$pins/go.sum" "$module/"
  sed -i 's|^module .*|module kvmount.test/kubernetes-node|' "$module/go.mod"
  for command in "${wanted[@]}"; do
    echo "building $command $version with $(go version | cut -d' ' -f3) (slow the first time)"
    start=$SECONDS
    (
      cd "$module"
      GOFLAGS=-mod=mod go build -o "$bin/$command.tmp" \
        -ldflags "-s -w \
          -X k8s.io/component-base/version.gitVersion=$version \
          -X k8s.io/component-base/version.gitMajor=1 \
          -X k8s.io/component-base/version.gitMinor=$minor \
          -X k8s.io/component-base/version.gitTreeState=clean" \
        "k8s.io/kubernetes/cmd/$command"
    )
    mv -f "$bin/$command.tmp" "$bin/$command"
    echo "$command $version: built in $((SECONDS - start))s at $bin/$command"
  done
fi

# ------------------------------------------------------------------ images
busybox="$(dpkg-query -W -f '${Version}' busybox-static)"
images="$cache/images"
stamp="$images/.busybox-$busybox"
if [ -f "$stamp" ] && [ -f "$images/busybox.tar" ] && [ -f "$images/pause.tar" ]; then
  echo "images (busybox $busybox): cached under $images"
  exit 0
fi
start=$SECONDS
mkdir -p "$images"
rm -f "$images"/.busybox-*
work="$(mktemp -d)"
storage="$cache/build/buildah"
buildah_() { buildah --storage-driver vfs --root "$storage/root" --runroot "$work/run" "$@"; }
trap 'rm -rf "$work"' EXIT
# The image's /bin: busybox and a link per applet, made here so that the build
# never runs a container.
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
done
build() { # image name, entrypoint (JSON), archive name: a scratch image holding that /bin
  local name="$1" entrypoint="$2" container
  container="$(buildah_ from scratch)"
  buildah_ copy "$container" "$work/rootfs" / > /dev/null
  buildah_ config --entrypoint "$entrypoint" --env PATH=/bin "$container"
  buildah_ commit --quiet --rm "$container" "$name" > /dev/null
  rm -f "$images/$3.tar"
  buildah_ push --quiet "$name" "docker-archive:$images/$3.tar:$name"
}
build kvmount.test/busybox:1 '["/bin/sh"]' busybox
# kubelet's sandbox ("pause") container only has to stay up; containerd kills it with SIGKILL.
build kvmount.test/pause:1 '["/bin/sleep", "2147483647"]' pause
buildah_ rmi --all > /dev/null
touch "$stamp"
echo "images (busybox $busybox): built in $((SECONDS - start))s under $images"
