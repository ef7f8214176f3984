#!/usr/bin/env bash
# A Docker engine for kind. A machine that has one running (DOCKER_HOST or the default socket answers)
# keeps using it. Otherwise this installs Debian's docker.io and starts a dockerd of the project's own:
# its socket at /run/llamaop/docker.sock, its data under ~/.cache/llama-operator/kind/docker (images and
# the build cache survive it), its log beside them. dockerd runs until `down`.
#
# Where the machine's capability bounding set lacks a capability the kernel knows (this sandbox lacks
# CAP_SYS_RESOURCE), every --privileged container fails ("unable to apply caps"): hack/kind/runc-wrapper,
# which drops those capabilities before runc runs, is then dockerd's default runtime (kind never passes
# --runtime). Elsewhere dockerd runs runc itself.
#
#   hack/kind/docker.sh up       start one unless an engine answers; prints DOCKER_HOST=... (empty: the default)
#   hack/kind/docker.sh down     stop the dockerd this script started
#   hack/kind/docker.sh status   which engine, and whether the runc wrapper is in use
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bindir=$("$root/hack/cluster/build.sh" --print-bindir)
state=$(dirname "$(dirname "$bindir")")/kind
run=/run/llamaop
sock=$run/docker.sock
pidfile=$run/docker.pid
log() { printf '[kind docker] %s\n' "$*" >&2; }

answers() { timeout 15 docker "$@" info >/dev/null 2>&1; }

ours_running() { [[ -f $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null && [[ -S $sock ]]; }

# Capabilities up to the kernel's last one that the bounding set lacks (none on an ordinary machine).
missing_caps() {
  local bnd last i missing=()
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  last=$(cat /proc/sys/kernel/cap_last_cap)
  for ((i = 0; i <= last; i++)); do (((0x$bnd >> i & 1) == 1)) || missing+=("$i"); done
  echo "${missing[*]}"
}

up() {
  if [[ -z ${LLAMAOP_OWN_DOCKER:-} ]] && command -v docker >/dev/null && answers; then
    echo "DOCKER_HOST=${DOCKER_HOST:-}"; return 0
  fi
  if ours_running && answers -H "unix://$sock"; then echo "DOCKER_HOST=unix://$sock"; return 0; fi
  "$root/hack/setup-debian.sh" kind
  mkdir -p "$run" "$state/docker" "$state/logs"
  local args=(--host "unix://$sock" --pidfile "$pidfile" --data-root "$state/docker" --exec-root "$run/docker")
  if [[ -n $(missing_caps) ]]; then
    # A stable copy: dockerd keeps the path, and the checkout may move or change.
    install -D -m 0755 "$here/runc-wrapper" "$state/bin/llamaop-runc"
    args+=(--add-runtime "llamaop-runc=$state/bin/llamaop-runc" --default-runtime llamaop-runc)
    log "capabilities $(missing_caps) are outside this machine's bounding set: runc runs through $state/bin/llamaop-runc"
  fi
  log "starting dockerd (data in $state/docker, log $state/logs/dockerd.log)"
  # setsid: it outlives the shell that started it. Debian's dockerd finds Debian's containerd and runc.
  setsid dockerd "${args[@]}" >"$state/logs/dockerd.log" 2>&1 </dev/null 8>&- &
  local i
  for ((i = 0; i < 150; i++)); do answers -H "unix://$sock" && break; sleep 0.2; done
  answers -H "unix://$sock" || { tail -20 "$state/logs/dockerd.log" >&2; log "dockerd did not answer within 30s"; exit 1; }
  echo "DOCKER_HOST=unix://$sock"
}

down() {
  ours_running || { rm -f "$pidfile"; return 0; }
  local pid i
  pid=$(<"$pidfile")
  kill "$pid"
  for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  log "dockerd stopped"
}

status() {
  if ours_running; then
    echo "dockerd of hack/kind/docker.sh at unix://$sock (pid $(<"$pidfile"))"
    docker -H "unix://$sock" info --format 'default runtime: {{.DefaultRuntime}}'
  elif command -v docker >/dev/null && answers; then
    echo "a Docker engine of this machine's own at ${DOCKER_HOST:-the default socket}"
  else
    echo "no Docker engine"
  fi
}

case ${1:-} in
  up) mkdir -p "$run"; exec 8>"$run/docker.lock"; flock 8; up ;;  # two runs at once start one dockerd
  down) down ;;
  status) status ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
