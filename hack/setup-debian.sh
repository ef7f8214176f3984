#!/usr/bin/env bash
# Debian packages the test tiers need. Installs only what is missing, so a warm machine pays nothing.
set -euo pipefail
need=()
for pkg in ${LLAMAOP_DEBIAN_PACKAGES:-}; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "[setup] installing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
