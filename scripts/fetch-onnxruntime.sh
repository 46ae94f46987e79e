#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library (linux x64) that the inference server loads, from the
# onnxruntime-node npm tarball, checks its SHA-256 against the value committed below and caches it.
#
#   scripts/fetch-onnxruntime.sh            # uses $COUNTERSIGN_CACHE (default: <repo>/.cache)
#
# The package's install script (which downloads more from elsewhere) is never run: `npm pack` only
# downloads the tarball, and we extract the one file we need. onnxruntime_go v1.27.0 is built
# against the ORT 1.24.1 C API (ORT_API_VERSION 24), so the two versions move together.
set -euo pipefail

ORT_VERSION=1.24.1
NPM_PACKAGE="onnxruntime-node@${ORT_VERSION}"
TARBALL_PATH="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
# sha256sum of ${TARBALL_PATH} in onnxruntime-node-1.24.1.tgz (computed once, committed here).
LIB_SHA256=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${COUNTERSIGN_CACHE:-${repo_root}/.cache}"
dest_dir="${cache}/onnxruntime/${ORT_VERSION}"
dest="${dest_dir}/libonnxruntime.so.1"
license_src="${repo_root}/inference-server/third_party/onnxruntime/LICENSE"

say() { echo "  onnxruntime: $*"; }

have_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if have_sha "$dest" "$LIB_SHA256"; then
  cp -f "$license_src" "${dest_dir}/LICENSE"
  say "cached ${dest} (sha256 ok)"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch-onnxruntime: npm not found (install Node.js and npm)" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || say "warning: this fetches the linux x64 library; this machine is $(uname -m)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "downloading ${NPM_PACKAGE} with npm pack (install scripts are not run)"
(cd "$tmp" && npm pack --silent --ignore-scripts "$NPM_PACKAGE" >/dev/null)
tgz="$(ls "$tmp"/onnxruntime-node-*.tgz)"
say "extracting ${TARBALL_PATH}"
tar -xzf "$tgz" -C "$tmp" "$TARBALL_PATH"
got="$(sha256sum "$tmp/$TARBALL_PATH" | cut -d' ' -f1)"
if [ "$got" != "$LIB_SHA256" ]; then
  echo "fetch-onnxruntime: SHA-256 mismatch for ${TARBALL_PATH}: got ${got}, want ${LIB_SHA256}" >&2
  exit 1
fi
mkdir -p "$dest_dir"
install -m 0644 "$tmp/$TARBALL_PATH" "${dest}.tmp"
mv -f "${dest}.tmp" "$dest"
cp -f "$license_src" "${dest_dir}/LICENSE"
say "cached ${dest} (sha256 ${got})"
