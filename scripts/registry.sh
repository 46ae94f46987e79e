#!/usr/bin/env bash
# A real OCI registry on loopback for the images `make images` builds: CNCF distribution's
# registry v3.1.2, built from the Go module proxy (build/tools/registry) into the git-ignored cache.
#
#   scripts/registry.sh build   build .cache/registry/bin/registry (a stamp skips a rebuild)
#   scripts/registry.sh up      build, then start it on $REGISTRY_ADDR (default 127.0.0.1:5000)
#                               unless it already runs; storage in .cache/registry/data
#   scripts/registry.sh down    stop the process this script started (its pid file), nothing else
#   scripts/registry.sh status  exit 0 when ours is up and answering /v2/
#
# The registry speaks plain HTTP: it listens on loopback only, and containerd (and
# go-containerregistry) use plain HTTP for localhost registries without extra configuration.
set -euo pipefail

REGISTRY_VERSION=v3.1.2
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/build/tools/registry"
cache="${REGISTRY_CACHE:-${COUNTERSIGN_CACHE:-$root/.cache}/registry}"
bin="$cache/bin/registry"
addr="${REGISTRY_ADDR:-127.0.0.1:5000}"
pidfile="$cache/registry.pid"
logfile="$cache/registry.log"
GO="${GO:-go}"

log() { printf '  registry: %s\n' "$*"; }
die() { printf 'registry: %s\n' "$*" >&2; exit 1; }

case "$addr" in
  127.*:*|localhost:*|\[::1\]:*) ;;
  *) die "REGISTRY_ADDR=$addr: this registry has no authentication and listens on loopback only (127.0.0.1:PORT)" ;;
esac

build() {
  local stamp
  stamp=$({ echo "registry $REGISTRY_VERSION"; "$GO" env GOVERSION; cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" "$0"; } | sha256sum | cut -d' ' -f1)
  if [ -x "$bin" ] && [ "$(cat "$cache/registry.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  log "building distribution registry $REGISTRY_VERSION from the Go module proxy (about a minute cold)..."
  local start=$SECONDS
  mkdir -p "$cache/bin"
  (cd "$mod" && GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    "$GO" build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
  echo "$stamp" >"$cache/registry.stamp"
  log "built in $((SECONDS - start))s: $bin"
}

# ours PID: is PID alive and running our registry binary (not a recycled PID)?
ours() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$bin")" ]
}

answering() { curl -fsS -o /dev/null --max-time 2 "http://$addr/v2/"; }

up() {
  build
  local pid; pid=$(cat "$pidfile" 2>/dev/null || true)
  if ours "$pid"; then
    if answering; then log "already up on $addr (pid $pid)"; return; fi
    die "pid $pid (ours) is running but http://$addr/v2/ does not answer; see $logfile, or run scripts/registry.sh down"
  fi
  rm -f "$pidfile"
  if answering 2>/dev/null; then
    die "something else already answers on http://$addr/v2/ (not started by this script); set REGISTRY_ADDR=127.0.0.1:PORT"
  fi
  mkdir -p "$cache/data"
  cat >"$cache/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: $cache/data
  delete:
    enabled: true
http:
  addr: $addr
EOF
  # No tracing exporter: the registry would otherwise try an OTLP collector on localhost.
  OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true \
    setsid "$bin" serve "$cache/config.yml" >>"$logfile" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  local i
  for i in $(seq 1 100); do
    if answering 2>/dev/null; then log "up on http://$addr (pid $pid, storage $cache/data, log $logfile)"; return; fi
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; tail -20 "$logfile" >&2; die "exited at start (log above, $logfile)"; }
    sleep 0.1
  done
  tail -20 "$logfile" >&2
  die "pid $pid does not answer on http://$addr/v2/ after 10s (log above); scripts/registry.sh down stops it"
}

down() {
  local pid; pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -z "$pid" ]; then log "not running (no $pidfile)"; return; fi
  if ! ours "$pid"; then
    log "pid $pid from $pidfile is gone or not our registry; removing the stale pid file"
    rm -f "$pidfile"; return
  fi
  kill -TERM "$pid"
  local i
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped (pid $pid)"; return; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  log "pid $pid did not stop on SIGTERM in 10s; killed"
}

status() {
  local pid; pid=$(cat "$pidfile" 2>/dev/null || true)
  ours "$pid" && answering
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 build|up|down|status" >&2; exit 2 ;;
esac
