#!/usr/bin/env bash
# The real node's images, built without Docker and imported into its containerd (namespace k8s.io)
# under the names in images.env:
#   pause       a static Go binary of our own (hack/workers/pause) in an otherwise empty image
#   CPU worker  workloads/images/cpu/rootfs.sh (Debian + Debian's CPU torch + PyPI + llama_runtime)
# Each is rebuilt only when its inputs change, and imported only when containerd lacks that manifest.
#
#   hack/workers/images.sh build    build (OCI layouts under ~/.cache/llama-operator/workers/images)
#   hack/workers/images.sh build pause   only the pause image (kind's node image preloads it)
#   hack/workers/images.sh import   build, then import into the running node's containerd
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/images.env"
bindir=$("$root/hack/cluster/build.sh" --print-bindir)
out=$(dirname "$(dirname "$bindir")")/workers/images
sock=/run/llamaop/containerd/containerd.sock
mkdir -p "$out"

log() { printf '[images] %s\n' "$*" >&2; }

oci() { # name config.json layout-dir layers... -> writes layout-dir and layout-dir.digest
  local name=$1 config=$2 layout=$3; shift 3
  python3 "$here/oci.py" --name "$name" --config "$config" --out "$layout" "$@" >"$layout.digest"
}

build_pause() {
  local dir=$out/pause key
  key=$( { cat "$here/pause/main.go" "$here/pause/go.mod"; go version; echo "$PAUSE_IMAGE"; } | sha256sum | cut -c1-32)
  if [[ -f $dir/layout.digest && $(cat "$dir/key" 2>/dev/null) == "$key" ]]; then return 0; fi
  mkdir -p "$dir/rootfs"
  (cd "$here/pause" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$dir/rootfs/pause" .)
  tar --numeric-owner --owner=0 --group=0 -C "$dir/rootfs" -cf "$dir/layer.tar" ./pause
  echo '{"Entrypoint": ["/pause"], "User": "65535:65535"}' >"$dir/config.json"
  oci "$PAUSE_IMAGE" "$dir/config.json" "$dir/layout" "$dir/layer.tar"
  echo "$key" >"$dir/key"
  log "built $PAUSE_IMAGE ($(du -k "$dir/layer.tar" | cut -f1) KB)"
}

build_cpu() {
  local dir=$out/cpu t0=$SECONDS layers
  "$root/workloads/images/cpu/rootfs.sh" "$dir"
  layers=("$dir/base.tar" "$dir/python.tar" "$dir/app.tar")
  # Re-assemble only when a layer or the config is newer than the layout.
  if [[ -f $dir/layout.digest ]] && [[ -z $(find "${layers[@]}" "$root/workloads/images/cpu/image.json" \
      -newer "$dir/layout.digest" 2>/dev/null) ]]; then return 0; fi
  oci "$CPU_WORKER_IMAGE" "$root/workloads/images/cpu/image.json" "$dir/layout" "${layers[@]}"
  log "assembled $CPU_WORKER_IMAGE in $((SECONDS - t0))s ($(du -cm "${layers[@]}" | tail -1 | cut -f1) MB uncompressed)"
}

import() { # name layout-dir
  local name=$1 layout=$2 want have t0=$SECONDS
  want=$(<"$layout.digest")
  have=$(ctr --address "$sock" -n k8s.io images ls "name==$name" 2>/dev/null | awk 'NR > 1 {print $3}')
  [[ $have == "$want" ]] && return 0
  # Send only the blobs containerd lacks (after a runtime edit: the app layer, not 1 GB of torch); the
  # importer finds the others in its content store.
  local have_blobs=() blobs=() b
  mapfile -t have_blobs < <(ctr --address "$sock" -n k8s.io content ls -q)
  for b in "$layout"/blobs/sha256/*; do
    [[ " ${have_blobs[*]} " == *" sha256:${b##*/} "* ]] || blobs+=("blobs/sha256/${b##*/}")
  done
  tar -C "$layout" -cf - oci-layout index.json "${blobs[@]}" |
    ctr --address "$sock" -n k8s.io images import - >/dev/null
  log "imported $name ($want, ${#blobs[@]} new blobs) in $((SECONDS - t0))s"
}

# The CRI keeps a reference by ID (sha256:...) to every image it saw; with the kubelet's image GC off
# (nothing can be pulled again), a replaced build would stay on disk. Drop the IDs no name points to.
prune() {
  local named
  named=$(ctr --address "$sock" -n k8s.io images ls | awk 'NR > 1 && $1 !~ /^sha256:/ {print $3}')
  ctr --address "$sock" -n k8s.io images ls | awk 'NR > 1 && $1 ~ /^sha256:/ {print $1, $3}' |
    while read -r ref digest; do
      [[ $named == *"$digest"* ]] || ctr --address "$sock" -n k8s.io images rm "$ref" >/dev/null
    done
}

build_pause
[[ ${2:-} == pause ]] || build_cpu
if [[ ${1:-build} == import ]]; then
  import "$PAUSE_IMAGE" "$out/pause/layout"
  import "$CPU_WORKER_IMAGE" "$out/cpu/layout"
  prune
fi
