# Sourced by scripts/peers/upstream-*.sh: builds a command of a Go module
# fetched at one exact version from the module proxy.
#
#   go_module_peer NAME MODULE VERSION PACKAGE [go mod edit flag...]
#
# `go install MODULE/PACKAGE@VERSION` does not work for upstream's modules
# (the proxy refuses their version lists, and a refused dependency cannot be
# replaced from the command line), but `go mod download MODULE@VERSION`
# does. So the module source is copied into a writable build directory under
# $KVMOUNT_CACHE/build, its go.mod edited with the given flags (a -replace for
# a refused dependency), and PACKAGE built there with the module's own
# go.sum. The binary lands in $KVMOUNT_CACHE/bin/NAME with NAME.version next
# to it; it is rebuilt only when that record differs (a changed version or
# edit, or GO_PEER_STAMP, which a caller sets to a digest of local sources it
# replaces a dependency with). Go's build log is shown only when it fails.

go_module_peer() {
  local name="$1" module="$2" version="$3" package="$4"
  shift 4
  local cache="${KVMOUNT_CACHE:-$HOME/.cache/kvmount}"
  local binary="$cache/bin/$name" build="$cache/build/$name"
  local record="$module@$version $* ${GO_PEER_STAMP:-}"
  if [ -x "$binary" ] && [ "$(cat "$binary.version" 2> /dev/null || true)" = "$record" ]; then
    echo "$name: cached at $binary ($module@$version)"
    return 0
  fi
  if ! command -v go > /dev/null; then
    [ -x /usr/local/go/bin/go ] || { echo "Go is needed to build $name" >&2; return 1; }
    export PATH="$PATH:/usr/local/go/bin"
  fi
  echo "building $name from $module@$version with $(go version | cut -d' ' -f3)"
  local start=$SECONDS log="$cache/build/$name.log" source_dir
  mkdir -p "$cache/bin" "$cache/build"
  # Outside any module, so no go.mod of ours is consulted or changed.
  source_dir="$(cd / && go mod download -json "$module@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$source_dir" ] || { echo "go mod download $module@$version gave no source" >&2; return 1; }
  rm -rf "$build"
  cp -R "$source_dir" "$build"
  chmod -R u+w "$build"  # the module cache is read-only
  if ! (
    cd "$build"
    if [ $# -gt 0 ]; then go mod edit "$@"; fi
    GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$binary.tmp" "./$package"
  ) > "$log" 2>&1; then
    cat "$log" >&2
    echo "$name: build failed (log above, also in $log)" >&2
    return 1
  fi
  mv -f "$binary.tmp" "$binary"
  echo "$record" > "$binary.version"
  rm -rf "$build" "$log"
  echo "$name: built in $((SECONDS - start))s at $binary"
}
