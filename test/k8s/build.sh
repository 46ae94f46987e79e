#!/usr/bin/env bash
# Builds the binaries the API-server tests need, from the Go module proxy, into the git-ignored
# cache (default .cache/k8s/, override with K8S_CACHE):
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl
#                           v1.37.2, from test/k8s/tools/kube (replaces each k8s.io staging
#                           module), in one go build
#   etcd v3.6.16            from test/k8s/tools/etcd (a four-line main around etcdmain.Main)
#   helm v3.22.0            with `go install` (GOBIN into the cache)
#   coredns v1.15.0         from test/k8s/tools/coredns (the plugins the local cluster's DNS
#                           uses), for `make cluster-up`
# A stamp per binary (NAME.inputs) records the inputs it was built from: the module files and the
# build recipe (version, commands, flags), not this script, so editing one binary's part here
# does not rebuild the others. A second run with the same inputs only checks the stamps. The cold
# build takes about 15 minutes on 2 cores.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
COREDNS_VERSION=v1.15.0

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${K8S_CACHE:-$root/.cache/k8s}"
bindir="$cache/bin"
mkdir -p "$bindir"
GO="${GO:-go}"

# The sub-modules are separate from the root module; -mod=mod lets them record what they resolve.
export GOWORK=off
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

log() { printf '  k8s: %s\n' "$*"; }

# stamp_of NAME INPUT... prints the content digest of the inputs plus the Go version.
stamp_of() {
  local name=$1; shift
  { echo "$name"; "$GO" env GOVERSION; cat "$@"; } | sha256sum | cut -d' ' -f1
}

# fresh NAME STAMP: is the cached binary present and built from these inputs?
fresh() {
  [ -x "$bindir/$1" ] && [ -f "$cache/$1.inputs" ] && [ "$(cat "$cache/$1.inputs")" = "$2" ]
}

# tidy_once DIR WHAT: the committed go.sum pins every module; tidy only when it is missing
# (after editing a go.mod by hand, delete go.sum and rerun to re-resolve).
tidy_once() {
  [ -f "$1/go.sum" ] && return
  log "$2: resolving modules (kube-apiserver downloads about 700 MB on a cold cache)..."
  (cd "$1" && "$GO" mod tidy)
}

# KUBE_CMDS: every k8s.io/kubernetes command the tests and the local cluster use. They are built
# in ONE `go build` so the compiled packages they share are compiled once (about 14 minutes cold
# on 2 cores for all of them, against about 8 for kube-apiserver alone).
KUBE_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

# build_kube: every binary of KUBE_CMDS from test/k8s/tools/kube, skipped when all are cached.
build_kube() {
  local mod="$here/tools/kube"
  tidy_once "$mod" "kubernetes $KUBE_VERSION"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  local stamp; stamp=$(stamp_of "kubernetes $KUBE_VERSION $KUBE_CMDS -trimpath -ldflags $ld" "$mod/go.mod" "$mod/go.sum" "$mod/tools.go")
  local name missing=0
  for name in $KUBE_CMDS; do fresh "$name" "$stamp" || missing=1; done
  if [ $missing = 0 ]; then log "kubernetes $KUBE_VERSION cached ($KUBE_CMDS)"; return; fi
  log "kubernetes $KUBE_VERSION: compiling $KUBE_CMDS in one go build (about 14 minutes cold on 2 cores)..."
  local start=$SECONDS pkgs=() out="$cache/kube.tmp"
  for name in $KUBE_CMDS; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
  rm -rf "$out"; mkdir -p "$out"
  (cd "$mod" && "$GO" build -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}")
  for name in $KUBE_CMDS; do
    mv "$out/$name" "$bindir/$name"
    echo "$stamp" >"$cache/$name.inputs"
  done
  rmdir "$out"
  log "kubernetes $KUBE_VERSION built in $((SECONDS - start))s"
}

build_etcd() {
  local mod="$here/tools/etcd"
  tidy_once "$mod" "etcd $ETCD_VERSION"
  local stamp; stamp=$(stamp_of "etcd $ETCD_VERSION -trimpath -ldflags -s -w" "$mod/go.mod" "$mod/go.sum" "$mod/main.go")
  if fresh etcd "$stamp"; then log "etcd $ETCD_VERSION cached"; return; fi
  log "etcd $ETCD_VERSION: compiling (about a minute cold)..."
  local start=$SECONDS
  (cd "$mod" && "$GO" build -trimpath -ldflags "-s -w" -o "$bindir/etcd.tmp" .)
  mv "$bindir/etcd.tmp" "$bindir/etcd"
  echo "$stamp" >"$cache/etcd.inputs"
  log "etcd $ETCD_VERSION built in $((SECONDS - start))s"
}

build_helm() {
  local stamp; stamp=$(echo "helm $HELM_VERSION $("$GO" env GOVERSION)" | sha256sum | cut -d' ' -f1)
  if fresh helm "$stamp"; then log "helm $HELM_VERSION cached"; return; fi
  log "helm $HELM_VERSION: go install (about 2 minutes cold)..."
  local start=$SECONDS
  # go install ignores the surrounding module and needs the default -mod.
  (cd "$cache" && GOFLAGS=-buildvcs=false GOBIN="$bindir" "$GO" install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  echo "$stamp" >"$cache/helm.inputs"
  log "helm $HELM_VERSION built in $((SECONDS - start))s"
}

build_coredns() {
  local mod="$here/tools/coredns"
  tidy_once "$mod" "coredns $COREDNS_VERSION"
  local stamp; stamp=$(stamp_of "coredns $COREDNS_VERSION -trimpath -ldflags -s -w" "$mod/go.mod" "$mod/go.sum" "$mod/main.go")
  if fresh coredns "$stamp"; then log "coredns $COREDNS_VERSION cached"; return; fi
  log "coredns $COREDNS_VERSION: compiling (about 2 minutes cold)..."
  local start=$SECONDS
  (cd "$mod" && "$GO" build -trimpath -ldflags "-s -w" -o "$bindir/coredns.tmp" .)
  mv "$bindir/coredns.tmp" "$bindir/coredns"
  echo "$stamp" >"$cache/coredns.inputs"
  log "coredns $COREDNS_VERSION built in $((SECONDS - start))s"
}

want="${*:-etcd helm kube coredns}"
for w in $want; do
  case "$w" in
    kube|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubectl) build_kube ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    coredns) build_coredns ;;
    *) echo "unknown binary: $w (want kube, etcd, helm or coredns)" >&2; exit 2 ;;
  esac
done
log "binaries in $bindir"
