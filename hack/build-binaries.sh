#!/usr/bin/env bash
# Builds the test ground's Go binaries from the Go module proxy into a version-keyed cache
# outside git: $WARMSCALE_CACHE/bin/<tool>-<version>/. A binary already there is never rebuilt.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/versions.env"
CACHE="${WARMSCALE_CACHE:-$HOME/.cache/warmscale}"
export GOFLAGS="-mod=mod" CGO_ENABLED=0

log() { printf '\033[1m[build]\033[0m %s\n' "$*" >&2; }

# build_tool NAME VERSION MODULE PACKAGE [LDFLAGS] — wrapper module pinned to MODULE@VERSION.
build_tool() {
  local name=$1 version=$2 module=$3 package=$4 ldflags=${5:-}
  local dest="$CACHE/bin/$name-$version"
  if [[ -x "$dest/$name" ]]; then log "$name $version: cached"; return; fi
  local work; work="$(mktemp -d)"
  log "$name $version: building $package (this takes minutes on a cold machine)"
  local start=$SECONDS
  ( cd "$work"
    go mod init "warmscale.local/build/$name" >/dev/null 2>&1
    [[ -n "${REPLACES:-}" ]] && printf '%s\n' "$REPLACES" >> go.mod
    go get "$package@$version" >/dev/null 2>&1 || go get "$module@$version"
    mkdir -p "$dest.tmp"
    /usr/bin/time -f "%M" -o "$work/peak_kb" go build -trimpath -ldflags "-s -w $ldflags" -o "$dest.tmp/$name" "$package"
  )
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
  log "$name $version: built in $((SECONDS - start)) s, peak RSS of the final build step $(( $(cat "$work/peak_kb") / 1024 )) MiB"
  rm -rf "$work"
}

kubernetes_replaces() {
  # Each ./staging/src/k8s.io/X replace in k8s.io/kubernetes's go.mod becomes k8s.io/X v0.<minor>.<patch>.
  local gomod staging_version="v0.${KUBERNETES_VERSION#v1.}"
  gomod="$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
}

build_all() {
  command -v go >/dev/null || { echo "error: Go toolchain not found; install Go >= 1.26 (https://go.dev/doc/install)" >&2; exit 1; }
  REPLACES="" build_tool etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3
  REPLACES="" build_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  REPLACES="" build_tool versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw
  REPLACES="" build_tool toxiproxy-server "$TOXIPROXY_VERSION" github.com/Shopify/toxiproxy/v2 \
    github.com/Shopify/toxiproxy/v2/cmd/server "-X github.com/Shopify/toxiproxy/v2.Version=$TOXIPROXY_VERSION"
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local kldflags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  local replaces=""
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    # Derived only when something must be built: it downloads the k8s.io/kubernetes module.
    [[ -x "$CACHE/bin/$cmd-$KUBERNETES_VERSION/$cmd" || -n "$replaces" ]] || replaces="$(kubernetes_replaces)"
    REPLACES="$replaces" build_tool "$cmd" "$KUBERNETES_VERSION" k8s.io/kubernetes "k8s.io/kubernetes/cmd/$cmd" "$kldflags"
  done
  log "binaries ready under $CACHE/bin"
}

build_all "$@"
