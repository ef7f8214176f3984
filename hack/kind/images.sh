#!/usr/bin/env bash
# Builds the images the kind cluster runs and prints their names:
#   operator    operator/Dockerfile with `docker build`, tagged llama-operator:<chart appVersion>
#               (the chart's default image); the build context is the checkout's files that git tracks
#               or would track, so .venv and caches never reach the Docker engine.
#   CPU worker  workloads/images/cpu/rootfs.sh through hack/workers/images.sh (Linux, root, debootstrap),
#               an OCI layout named as hack/workers/images.env says; run.sh loads it as an archive.
# Base of the operator image: the Dockerfile's default (python:3.11-slim, from a registry), or
# LLAMAOP_BASE_IMAGE=IMAGE, or LLAMAOP_BASE_IMAGE=debootstrap to build one offline from Debian packages.
# Usage: hack/kind/images.sh   (prints "operator=IMAGE" and "cpu=IMAGE ARCHIVE-DIR")
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log() { printf '[kind images] %s\n' "$*" >&2; }

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/llama-operator/Chart.yaml)
operator_image=llama-operator:$version
base=${LLAMAOP_BASE_IMAGE:-}

debootstrap_base() { # a Debian base with python3 and venv, made without a registry
  local suite=${LLAMAOP_IMAGE_SUITE:-trixie} image dir
  image=localhost/llamaop-base:$suite
  if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; return 0; fi
  dir=$(mktemp -d)
  log "debootstrap $suite into $dir (needs root)"
  debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates "$suite" "$dir" \
    "${LLAMAOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; return 1; }
  # pip in the build trusts this machine's CA bundle: the way to PyPI may be re-signed (it is in CI).
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$dir/etc/ssl/certs/ca-certificates.crt"
  tar -C "$dir" -c . | docker import --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$image" >/dev/null
  rm -f "$dir.log"
  rm -rf "$dir"
  echo "$image"
}

context() { # the checkout as a tar stream: tracked and untracked-but-not-ignored files that exist
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
      tar --null -T - -cf -
  else
    tar --exclude=.venv --exclude=.git --exclude='*.egg-info' -cf - .
  fi
}

[[ $base == debootstrap ]] && base=$(debootstrap_base)
build_args=()
[[ -n $base ]] && build_args+=(--build-arg "BASE_IMAGE=$base")
t0=$SECONDS
build_log=$(mktemp)
context | docker build -q -f operator/Dockerfile "${build_args[@]}" --label io.llamaop.image=operator \
  -t "$operator_image" - >/dev/null 2>"$build_log" || { cat "$build_log" >&2; rm -f "$build_log"; exit 1; }
rm -f "$build_log"
# Untagged leftovers of earlier builds (replaced images, stale build cache), a day old at least so that
# the cache of recent builds stays; the label keeps this to our own images.
docker image prune -f --filter label=io.llamaop.image=operator --filter until=24h >/dev/null
log "built $operator_image in $((SECONDS - t0))s"
echo "operator=$operator_image"

source hack/workers/images.env
hack/workers/images.sh build
bindir=$(hack/cluster/build.sh --print-bindir)
echo "cpu=$CPU_WORKER_IMAGE $(dirname "$(dirname "$bindir")")/workers/images/cpu/layout"
