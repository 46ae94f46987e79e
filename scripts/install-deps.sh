#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use. Idempotent; needs root (or sudo).
set -euo pipefail
pkgs=(ca-certificates make gcc git)
# Component scripts list more packages in scripts/deps.d/*.txt, one per line.
for f in "$(dirname "$0")"/deps.d/*.txt; do
  [ -e "$f" ] || continue
  while read -r p; do [ -n "$p" ] && [ "${p#\#}" = "$p" ] && pkgs+=("$p"); done <"$f"
done
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "  system packages present"; exit 0; fi
echo "  installing: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
