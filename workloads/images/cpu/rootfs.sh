#!/usr/bin/env bash
# The CPU worker image without Docker or a registry: three uncompressed layers, built in a chroot from
# Debian's and PyPI's packages, written to OUT (hack/workers/images.sh assembles and imports them).
#   base.tar    Debian $SUITE (debootstrap minbase) + packages.txt (Debian's CPU torch), user llama (1000)
#   python.tar  /usr/local: requirements.lock from PyPI (exact versions and hashes), installed by pip
#               inside the chroot beside Debian's torch and numpy
#   app.tar     the llama_runtime package from this checkout, and llamaop_torch_glue (torchrun without libuv)
# Each layer is rebuilt only when its inputs change: its .key file holds the hash of its step's code
# and inputs, so editing the runtime rebuilds only app.tar (a second), not torch.
# requirements.lock pins what requirements.txt resolves to on top of the base layer's Debian packages, so
# two builds on two days install the same PyPI packages; `--lock` (make lock) resolves it anew.
# Usage: workloads/images/cpu/rootfs.sh [--lock] OUT   (as root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
relock=false
if [[ ${1:-} == --lock ]]; then relock=true; shift; fi
out=${1:?usage: $0 [--lock] OUT}
lock=$here/requirements.lock
# Debian 14 "forky" (testing): python3-torch 2.14 (CPU, gloo), Python 3.14. Debian 13's torch 2.6 imports
# transformers 5.x but its FSDP2 cannot run on CPU ('Stream' object has no attribute 'record_event'),
# and the runtime shards with FSDP2. Testing moves: LLAMAOP_IMAGE_SUITE picks another suite.
SUITE=${LLAMAOP_IMAGE_SUITE:-forky}
MIRROR=${LLAMAOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PIP_VERSION=26.3
rootfs=$out/rootfs
debs=$out/../cache/debs       # shared by the image recipes: .debs and pip's cache survive rebuilds
pipcache=$out/../cache/pip
mkdir -p "$out" "$debs" "$pipcache"
exec 9>"$out/.lock"; flock 9  # two test runs at once build once

log() { printf '[image cpu] %s\n' "$*" >&2; }

# The host's CA bundle, which pip inside the chroot trusts too (the way to PyPI may be re-signed).
host_ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}

# Runs a command in the chroot with /proc, /dev, DNS, the host's CAs and the package caches mounted, in
# a private mount namespace that disappears with the command (so nothing of it reaches a layer).
in_root() {
  unshare --mount --propagation private -- bash -euo pipefail -c '
    r=$1 debs=$2 pipcache=$3 ca=$4; shift 4
    mount -t proc proc "$r/proc"
    mount --bind /dev "$r/dev"
    mkdir -p "$r/var/cache/apt/archives" "$r/root/.cache/pip"
    mount --bind "$debs" "$r/var/cache/apt/archives"
    mount --bind "$pipcache" "$r/root/.cache/pip"
    touch "$r/etc/resolv.conf" "$r/tmp/host-ca.crt"
    mount --bind /etc/resolv.conf "$r/etc/resolv.conf"
    mount --bind "$ca" "$r/tmp/host-ca.crt"
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive PIP_CERT=/tmp/host-ca.crt "$@"
  ' _ "$rootfs" "$debs" "$pipcache" "$host_ca" "$@"
  rm -f "$rootfs/tmp/host-ca.crt"
}

tar_layer() { # out.tar tar-args...
  local dest=$1; shift
  tar --numeric-owner --sort=name -cf "$dest.tmp" "$@"
  mv "$dest.tmp" "$dest"
}

packages() { grep -v '^\s*#' "$here/packages.txt" | xargs; }

build_base() {
  rm -rf "$rootfs"
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  # No docs, manuals or translations in a worker image.
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
    'path-exclude=/usr/lib/x86_64-linux-gnu/ucx/*rocm*' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/llamaop-slim"
  # An older debootstrap may not know a newer suite by name; its script is sid's.
  local script=/usr/share/debootstrap/scripts/$SUITE
  [[ -e $script ]] || script=/usr/share/debootstrap/scripts/sid
  debootstrap --variant=minbase --cache-dir="$(cd "$debs" && pwd)" "$SUITE" "$rootfs" "$MIRROR" "$script" \
    >"$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; return 1; }
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"; chmod +x "$rootfs/usr/sbin/policy-rc.d"
  # Testing's Release files expire within days; the archive this machine reaches may be a frozen copy.
  local apt=(apt-get -o Acquire::Check-Valid-Until=false)
  in_root "${apt[@]}" update -qq
  # shellcheck disable=SC2046
  in_root "${apt[@]}" install -y -qq --no-install-recommends $(packages) >"$out/apt.log" 2>&1 ||
    { tail -20 "$out/apt.log" >&2; return 1; }
  # Dependencies a CPU worker never loads, dropped for size (over 200 MB): PyTorch's own test suite
  # (python3-torch depends on it) and the ROCm runtime (and its LLVM) that only UCX's GPU modules,
  # excluded above, link. The smoke test in build_python proves torch still loads without them.
  local drop
  drop=$(in_root dpkg-query -W -f '${Package}\n' |
    grep -E '^(libtorch-test|libamdhip64-[0-9]+|libamd-comgr[0-9]+|libhsa-runtime64-[0-9]+|libhsakmt[0-9]*|libllvm[0-9]+(t64)?)$' || true)
  # shellcheck disable=SC2086
  [[ -z $drop ]] || in_root dpkg --purge --force-depends $drop >/dev/null 2>&1
  echo 'llama:x:1000:1000:llama worker:/home/llama:/bin/sh' >>"$rootfs/etc/passwd"
  echo 'llama:x:1000:' >>"$rootfs/etc/group"
  install -d -o 1000 -g 1000 "$rootfs/home/llama"
  rm -rf "$rootfs/usr/sbin/policy-rc.d" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/tmp/* "$rootfs"/var/cache/apt/*.bin
  : >"$rootfs/etc/resolv.conf"
  tar_layer "$out/base.tar" -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./var/cache/apt/archives/*' --exclude='./root/.cache' .
}

# The lock's first line names the requirements.txt it was resolved from (and the suite under it).
lock_inputs() { echo "# from: requirements.txt sha256:$(sha256sum "$here/requirements.txt" | cut -c1-16), Debian $SUITE"; }

pip_in_root() { # pip (run from its wheel, so the image carries no pip) in the chroot; installs into /usr/local
  local wheel=$debs/../pip-$PIP_VERSION-py3-none-any.whl
  [[ -f $wheel ]] || python3 -m pip download -q --no-deps --only-binary=:all: "pip==$PIP_VERSION" -d "$(dirname "$wheel")"
  cp "$wheel" "$rootfs/tmp/pip.whl"
  in_root python3 /tmp/pip.whl/pip install -q --break-system-packages --root-user-action=ignore \
    --disable-pip-version-check --no-warn-script-location "$@"
  rm -f "$rootfs/tmp/pip.whl"
}

# Resolve requirements.txt against the base layer, whose Debian packages (torch, numpy, yaml...) count as
# installed, and write what pip would add from PyPI, with each file's hash, to requirements.lock.
relock_python() {
  local py
  py=$(readlink "$rootfs/usr/bin/python3")
  rm -rf "$rootfs/usr/local/lib/$py/dist-packages"  # resolve against Debian's packages alone
  cp "$here/requirements.txt" "$rootfs/tmp/requirements.txt"
  pip_in_root --dry-run --report /tmp/report.json -r /tmp/requirements.txt
  python3 - "$rootfs/tmp/report.json" "$lock.tmp" "$(lock_inputs)" <<'PY'
import json, sys
report, out, inputs = sys.argv[1:]
lines = [inputs, "# Written by `make lock` (workloads/images/cpu/rootfs.sh --lock); do not edit."]
for item in sorted(json.load(open(report))["install"], key=lambda i: i["metadata"]["name"].lower()):
    meta, archive = item["metadata"], item["download_info"].get("archive_info", {})
    sha = archive.get("hashes", {}).get("sha256") or archive.get("hash", "").removeprefix("sha256=")
    if not sha:
        sys.exit(f"pip reported no sha256 for {meta['name']}")
    lines.append(f"{meta['name']}=={meta['version']} --hash=sha256:{sha}")
open(out, "w").write("\n".join(lines) + "\n")
PY
  rm -f "$rootfs/tmp/requirements.txt" "$rootfs/tmp/report.json"
  mv "$lock.tmp" "$lock"
  log "wrote $lock ($(grep -c '^[^#]' "$lock") packages)"
}

build_python() {
  local py before
  py=$(readlink "$rootfs/usr/bin/python3")
  # A clean /usr/local: this layer is exactly what pip puts there.
  rm -rf "$rootfs/usr/local/lib/$py/dist-packages" "$rootfs"/usr/local/bin/*
  cp "$lock" "$rootfs/tmp/requirements.lock"
  before=$(ls "$rootfs/usr/lib/python3/dist-packages")
  # Exactly the locked files (--require-hashes), none of their dependencies re-resolved (--no-deps), beside
  # Debian's copies rather than over them (/usr/local comes first on sys.path).
  pip_in_root --require-hashes --no-deps --ignore-installed -r /tmp/requirements.lock
  rm -f "$rootfs/tmp/requirements.lock"
  # Smoke test: torch (with gloo), transformers' Llama and safetensors load in the image as built.
  in_root python3 -c 'import torch, torch.distributed as d, safetensors, prometheus_client, structlog
from transformers import LlamaConfig, LlamaForCausalLM
assert d.is_gloo_available(), "torch without gloo"
print("[image cpu] torch", torch.__version__, "gloo ok")' >&2
  # pip must not have replaced a Debian package: the layer holds /usr/local only.
  [[ $(ls "$rootfs/usr/lib/python3/dist-packages") == "$before" ]] ||
    { log "pip changed Debian's packages; pin requirements.txt to versions that Debian's satisfy"; return 1; }
  tar_layer "$out/python.tar" -C "$rootfs" ./usr/local
}

build_app() {
  local py stage=$out/app
  py=$(readlink "$rootfs/usr/bin/python3")
  rm -rf "$stage"; mkdir -p "$stage/usr/local/lib/$py/dist-packages"
  tar -C "$root/workloads" --exclude=__pycache__ --exclude='*.pyc' -cf - llama_runtime |
    tar -C "$stage/usr/local/lib/$py/dist-packages" -xf -
  # Makes torchrun work with Debian's torch (built without libuv): see llamaop_torch_glue.py.
  cp "$here/llamaop_torch_glue.py" "$here/llamaop_torch_glue.pth" "$stage/usr/local/lib/$py/dist-packages/"
  tar_layer "$out/app.tar" --owner=0 --group=0 --mode=a+rX,go-w -C "$stage" ./usr
}

# A step's key: its own code, the helpers that shape its output, a string and its input files.
key() { # step string inputs...
  local step=$1 extra=$2; shift 2
  { declare -f "build_$step" tar_layer packages; [[ $step != python ]] || declare -f pip_in_root; echo "$SUITE $MIRROR $PIP_VERSION $extra"; cat "$@"; } |
    sha256sum | cut -c1-32
}

runtime_files() { find "$root/workloads/llama_runtime" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | sort; }

step() { # name key
  local name=$1 k=$2 t0=$SECONDS
  if [[ -f $out/$name.tar && $(cat "$out/$name.key" 2>/dev/null) == "$k" ]]; then return 0; fi
  log "building layer $name"
  rm -f "$out/$name.key"
  "build_$name"
  echo "$k" >"$out/$name.key"
  log "built layer $name in $((SECONDS - t0))s ($(du -m "$out/$name.tar" | cut -f1) MB)"
}

if ! $relock && [[ $(head -1 "$lock" 2>/dev/null) != "$(lock_inputs)" ]]; then
  log "requirements.txt changed since $lock was written: run \`make lock\` and commit the lock"
  exit 1
fi
base_key=$(key base "" "$here/packages.txt")
[[ -x $rootfs/usr/bin/python3 ]] || rm -f "$out/base.key"
step base "$base_key"
if $relock; then relock_python; exit 0; fi
step python "$(key python "$base_key" "$lock")"
mapfile -t sources < <(runtime_files)
step app "$(key app "$(readlink "$rootfs/usr/bin/python3") ${sources[*]#"$root"/}" "${sources[@]}" \
  "$here"/llamaop_torch_glue.*)"
