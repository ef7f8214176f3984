#!/usr/bin/env bash
# Debian packages the test tiers need. Installs only what is missing, so a warm machine pays nothing.
# Usage: hack/setup-debian.sh [GROUP...]   groups: workers (a real kubelet node and its image recipe),
#        kind (a Docker engine for kind)
# $LLAMAOP_DEBIAN_PACKAGES adds packages of your own.
set -euo pipefail
declare -A groups=(
  # containerd and runc run the pods; the CNI plugins wire them to a bridge; kube-proxy and kubelet
  # drive iptables and conntrack; debootstrap builds the worker image's root file system.
  [workers]="containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux debootstrap curl openssl"
  # The kind tier: a Docker engine (dockerd, with Debian's containerd and runc), debootstrap for the
  # node and operator images' Debian, jq for the runc wrapper.
  [kind]="docker.io debootstrap jq iptables"
)
read -ra want <<<"${LLAMAOP_DEBIAN_PACKAGES:-}"
for g in "$@"; do
  [[ -n ${groups[$g]:-} ]] || { echo "[setup] unknown package group: $g" >&2; exit 2; }
  read -ra pkgs <<<"${groups[$g]}"
  want+=("${pkgs[@]}")
done
need=()
for pkg in "${want[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == *"install ok installed"* ]] || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "[setup] installing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's containerd starts itself through systemd where there is one; policy-rc.d keeps the
  # install from starting any service: the project starts its own on its own socket.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.llamaop
  chmod +x /usr/sbin/policy-rc.d.llamaop
  [[ -e /usr/sbin/policy-rc.d ]] || ln -s policy-rc.d.llamaop /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [[ $(readlink /usr/sbin/policy-rc.d 2>/dev/null) != policy-rc.d.llamaop ]] || rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.llamaop
fi
