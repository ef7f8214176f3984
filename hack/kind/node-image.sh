#!/usr/bin/env bash
# kind's node image, built with no image registry (`kind build node-image` pulls its base image, the
# CNI and storage images): Debian packages through debootstrap, kind's own base files from its Go
# module, and this project's Go-built Kubernetes binaries. Prints the image's name. The image is built
# once per set of inputs: a hash of them is in its tag (localhost/llamaop-kind-node:vK8S-HASH).
#
# What is in it (kind's base image, images/base/Dockerfile in the kind module, is the model):
#   Debian $SUITE: systemd (trimmed as kind trims it), containerd + runc + the CNI plugins, iptables,
#     nftables, conntrack...; kind's entrypoint, /kind/bin scripts, containerd/kubelet/sysctl files
#   /usr/bin: kubeadm, kubelet, kubectl (hack/cluster/build.sh); /kind/version
#   preloaded into containerd (namespace k8s.io, pinned): the control plane, etcd, CoreDNS and
#     kube-proxy (each a static binary in an otherwise minimal image), the pause image of the workers
#     tier, and llamaop-kindnet (hack/kind/cni), the pod network kind installs from
#     /kind/manifests/default-cni.yaml
# etcd and CoreDNS are this project's versions, not kubeadm's defaults: the kind config sets their tags
# (run.sh writes it). kube-proxy runs in nftables mode (its image carries nft, not iptables).
#
# Usage: hack/kind/node-image.sh   (Linux, root, a Docker engine: hack/kind/docker.sh up)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/hack/cluster/versions.env"
source "$root/hack/workers/images.env"
KIND_VERSION=${KIND_VERSION:-0.33.0}
# bookworm's systemd (252) still boots on a cgroup v1 host; trixie's refuses to without a force flag.
SUITE=${LLAMAOP_KIND_NODE_SUITE:-bookworm}
MIRROR=${LLAMAOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="systemd conntrack iptables nftables iproute2 ethtool mount kmod libseccomp2 pigz ca-certificates
curl jq procps containerd runc containernetworking-plugins"
bindir=$("$root/hack/cluster/build.sh" --print-bindir)
cache=$(dirname "$(dirname "$bindir")")
out=$cache/kind/node
repo=localhost/llamaop-kind-node
mkdir -p "$out"
exec 9>"$out/.lock"; flock 9  # two runs at once build once

log() { printf '[kind node] %s\n' "$*" >&2; }
hash16() { sha256sum | cut -c1-16; }

binaries=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns)
BUILD_ONLY="${binaries[*]}" "$root/hack/cluster/build.sh" >/dev/null
"$root/hack/workers/images.sh" build pause
kind_files=$(cd "$out" && GOFLAGS= go mod download -json "sigs.k8s.io/kind@v$KIND_VERSION" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/images/base/files

# ---- the key: everything that shapes the image ------------------------------------------------
base_key=$( { echo "$SUITE $MIRROR $PACKAGES"; sed -n '/^build_base()/,/^}/p' "$0"; } | hash16)
kindnet_key=$(cat "$here"/cni/go.mod "$here"/cni/*.go <(go version) | hash16)
key=$( { cat "$0" "$here"/node/* "$root/hack/cluster/versions.env" "$root/hack/workers/images.env"
  echo "$KIND_VERSION $base_key $kindnet_key"; cat "$cache/workers/images/pause/layout.digest"
  (cd "$kind_files" && find . -type f | sort | xargs cat)
  (cd "$bindir" && sha256sum "${binaries[@]}"); } | hash16)
image=$repo:v$K8S_VERSION-${key:0:12}
if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi

t0=$SECONDS
work=$out/work
rootfs=$work/rootfs
rm -rf "$work"; mkdir -p "$work/images"

# Runs a command chrooted in the node's root, with /proc, /dev and a private /run and /tmp that go away
# with it (nothing of them reaches the image).
in_root() {
  unshare --mount --propagation private -- bash -euo pipefail -c '
    r=$1; shift
    mount -t proc proc "$r/proc"; mount --bind /dev "$r/dev"
    mount -t tmpfs tmpfs "$r/run"; mount -t tmpfs tmpfs "$r/tmp"
    [[ -z ${BIND:-} ]] || { mkdir -p "$r/mnt/bind"; mount --bind "$BIND" "$r/mnt/bind"; }
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"
  ' _ "$rootfs" "$@"
}

# ---- Debian, trimmed the way kind's base image is -----------------------------------------------
build_base() {
  local dir=$out/base
  rm -rf "$dir"; mkdir -p "$dir/etc/dpkg/dpkg.cfg.d" "$out/debs"
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
    >"$dir/etc/dpkg/dpkg.cfg.d/llamaop-slim"
  log "debootstrap $SUITE with $(wc -w <<<"$PACKAGES") packages"
  debootstrap --variant=minbase --include="${PACKAGES//[[:space:]]/,}" --cache-dir="$out/debs" \
    "$SUITE" "$dir" "$MIRROR" >"$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; return 1; }
  # kind's Dockerfile: no tmpfiles at boot, no units beyond the ones it enables, no kernel log.
  find "$dir/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$dir"/lib/systemd/system/multi-user.target.wants/* "$dir"/etc/systemd/system/*.wants/* \
    "$dir"/lib/systemd/system/local-fs.target.wants/* "$dir"/lib/systemd/system/sockets.target.wants/*udev* \
    "$dir"/lib/systemd/system/sockets.target.wants/*initctl* "$dir"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$dir/etc/systemd/journald.conf"
  ln -sf /lib/systemd/systemd "$dir/sbin/init"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/* "$dir"/var/cache/apt/archives/*.deb
  : >"$dir/etc/resolv.conf"; rm -f "$dir/etc/hostname" "$dir/etc/machine-id"
  echo "$base_key" >"$dir.key"
}
if [[ $(cat "$out/base.key" 2>/dev/null) != "$base_key" ]]; then build_base; fi
cp -a "$out/base" "$rootfs"

# ---- kind's files, then this project's --------------------------------------------------------
install -m 0755 "$kind_files"/usr/local/bin/* "$rootfs/usr/local/bin/"
mkdir -p "$rootfs/kind/bin" "$rootfs/kind/manifests" "$rootfs/etc/containerd" "$rootfs/etc/default" \
  "$rootfs/etc/sysctl.d" "$rootfs/etc/systemd/system/kubelet.service.d" "$rootfs/etc/kubernetes/manifests"
install -m 0644 "$kind_files"/kind/*.txt "$rootfs/kind/"
install -m 0755 "$kind_files"/kind/bin/* "$here/node/llamaop-sandbox.sh" "$rootfs/kind/bin/"
install -m 0644 "$kind_files"/etc/crictl.yaml "$rootfs/etc/"
install -m 0644 "$kind_files"/etc/containerd/config.toml "$rootfs/etc/containerd/"
install -m 0644 "$kind_files"/etc/default/kubelet "$rootfs/etc/default/"
install -m 0644 "$kind_files"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
install -m 0644 "$kind_files"/etc/systemd/system/*.service "$kind_files"/etc/systemd/system/*.slice \
  "$rootfs/etc/systemd/system/"
install -m 0644 "$kind_files"/etc/systemd/system/kubelet.service.d/* "$rootfs/etc/systemd/system/kubelet.service.d/"
install -D -m 0644 "$here/node/containerd-llamaop.conf" "$rootfs/etc/systemd/system/containerd.service.d/10-llamaop.conf"
# Debian's containerd and runc, where kind's units and PATH look for its own builds.
for b in containerd containerd-shim-runc-v2 ctr; do ln -sf "/usr/bin/$b" "$rootfs/usr/local/bin/$b"; done
ln -sf /usr/sbin/runc "$rootfs/usr/local/sbin/runc"
# Debian's CNI plugins live in /usr/lib/cni; containerd looks in /opt/cni/bin.
mkdir -p "$rootfs/opt/cni"; ln -sfn /usr/lib/cni "$rootfs/opt/cni/bin"
# The pause image is the workers tier's own (there is no registry.k8s.io/pause here).
sed -i "s|^\(\s*sandbox_image = \).*|\1\"$PAUSE_IMAGE\"|" "$rootfs/etc/containerd/config.toml"
grep -q "sandbox_image = \"$PAUSE_IMAGE\"" "$rootfs/etc/containerd/config.toml"
for b in kubeadm kubelet kubectl; do install -m 0755 "$bindir/$b" "$rootfs/usr/bin/$b"; done
echo -n "v$K8S_VERSION" >"$rootfs/kind/version"
in_root systemctl enable kubelet.service containerd.service undo-mount-hacks.service 2>"$out/systemctl.log"
in_root systemctl mask systemd-binfmt.service 2>>"$out/systemctl.log"
# containerd's base OCI spec, as kind makes it: the product_uuid hook, no rlimits.
in_root ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
  jq 'del(.process.rlimits)' >"$rootfs/etc/containerd/cri-base.json"

# ---- the images kubeadm and kind start --------------------------------------------------------
layer() { # tar-file dir -> a layer of the directory's contents, owned by root
  tar --numeric-owner --owner=0 --group=0 --sort=name -C "$2" -cf "$1" .
}
oci() { # name config-json layout-name layers... -> $work/images/layout-name.tar (an OCI archive)
  local name=$1 config=$2 dir=$work/images/$3; shift 3
  echo "$config" >"$dir.json"
  python3 "$root/hack/workers/oci.py" --name "$name" --config "$dir.json" --out "$dir" "$@" >/dev/null
  tar -C "$dir" -cf "$dir.tar" . && rm -rf "$dir" "$dir.json"
}

# What the static Go binaries' images share: users, /tmp, name resolution through files then DNS.
static=$work/static
mkdir -p "$static/etc" "$static/tmp"; chmod 1777 "$static/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$static/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$static/etc/group"
echo 'hosts: files dns' >"$static/etc/nsswitch.conf"
layer "$work/static.tar" "$static"

# nft (kube-proxy's nftables mode, the CNI's NAT) and ip (the CNI's routes), with the libraries they
# link, taken from the node's own Debian.
tools=$work/tools
for b in /usr/sbin/nft /usr/bin/ip; do
  for f in "$b" $(in_root ldd "$b" | grep -o '/[^ ]*'); do
    mkdir -p "$tools$(dirname "$f")"; cp -L "$rootfs$f" "$tools$f"
  done
done
layer "$work/tools.tar" "$tools"

binary_layer() { # binary [path-in-image] -> $work/NAME.tar
  local name; name=$(basename "$1")
  mkdir -p "$work/$name/usr/local/bin"; cp "$1" "$work/$name/usr/local/bin/"
  layer "$work/$name.tar" "$work/$name"
}
path_env='"Env": ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns; do binary_layer "$bindir/$c"; done
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  oci "registry.k8s.io/$c:v$K8S_VERSION" "{\"Entrypoint\": [\"/usr/local/bin/$c\"], $path_env}" "$c" \
    "$work/static.tar" "$work/$c.tar"
done
oci "registry.k8s.io/kube-proxy:v$K8S_VERSION" "{\"Entrypoint\": [\"/usr/local/bin/kube-proxy\"], $path_env}" \
  kube-proxy "$work/static.tar" "$work/tools.tar" "$work/kube-proxy.tar"
oci "registry.k8s.io/etcd:$ETCD_VERSION" "{\"Entrypoint\": [\"/usr/local/bin/etcd\"], $path_env}" etcd \
  "$work/static.tar" "$work/etcd.tar"
# CoreDNS's own image keeps the binary at /coredns.
mkdir -p "$work/coredns-root"; cp "$bindir/coredns" "$work/coredns-root/coredns"; layer "$work/coredns-root.tar" "$work/coredns-root"
oci "registry.k8s.io/coredns/coredns:v$COREDNS_VERSION" '{"Entrypoint": ["/coredns"], "ExposedPorts": {"53/udp": {}, "53/tcp": {}, "9153/tcp": {}}}' \
  coredns "$work/static.tar" "$work/coredns-root.tar"
mkdir -p "$work/kindnet/usr/local/bin"
(cd "$here/cni" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$work/kindnet/usr/local/bin/llamaop-kindnet" .)
layer "$work/kindnet.tar" "$work/kindnet"
kindnet_image=localhost/llamaop-kindnet:$kindnet_key
oci "$kindnet_image" "{\"Entrypoint\": [\"/usr/local/bin/llamaop-kindnet\"], $path_env}" kindnet \
  "$work/static.tar" "$work/tools.tar" "$work/kindnet.tar"
tar -C "$cache/workers/images/pause/layout" -cf "$work/images/pause.tar" .
sed "s|localhost/llamaop-kindnet:KINDNET_TAG|$kindnet_image|" "$here/node/default-cni.yaml" >"$rootfs/kind/manifests/default-cni.yaml"

# Into the node's containerd, as kind's image build does it (a containerd started for the purpose,
# `ctr images import --no-unpack`, pinned so the kubelet never collects them).
cat >"$rootfs/tmp-import.toml" <<'TOML'
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "/run/containerd/import.sock"
TOML
BIND=$work/images in_root bash -euo pipefail -c '
  containerd --config /tmp-import.toml >/run/containerd.log 2>&1 9>&- &
  trap "kill $! 2>/dev/null; wait" EXIT
  for i in $(seq 50); do ctr --address /run/containerd/import.sock version >/dev/null 2>&1 && break; sleep 0.2; done
  c="ctr --address /run/containerd/import.sock -n k8s.io"
  for archive in /mnt/bind/*.tar; do $c images import --no-unpack --all-platforms --digests "$archive" >/dev/null; done
  # (containerd 1.6'"'"'s import has no --label)
  for image in $($c images ls -q); do $c images label "$image" io.cri-containerd.pinned=pinned >/dev/null; done
  $c images ls -q | grep -v "@sha256:" >&2'
rm -f "$rootfs/tmp-import.toml"; rmdir "$rootfs/mnt/bind" 2>/dev/null || true

# ---- one layer, kind's entrypoint and stop signal ---------------------------------------------
log "importing the root file system ($(du -sm "$rootfs" | cut -f1) MB) as $image"
tar --numeric-owner --xattrs -C "$rootfs" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -cf - . |
  docker import - "$image-rootfs" >/dev/null
# The settings kind's base image has (`docker import --change` cannot set a stop signal; a build with
# no RUN step can, and adds no layer).
docker build -q -t "$image" - >/dev/null 2>"$out/build.log" <<DOCKERFILE || { cat "$out/build.log" >&2; exit 1; }
FROM $image-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
LABEL io.llamaop.recipe=hack/kind/node-image.sh io.llamaop.key=$key
DOCKERFILE
docker image rm "$image-rootfs" >/dev/null
rm -rf "$work"
# Earlier builds are not needed once this one exists (each is about a gigabyte).
docker image ls "$repo" --format '{{.Repository}}:{{.Tag}}' | grep -vx "$image" | xargs -r docker image rm >/dev/null || true
log "built $image in $((SECONDS - t0))s"
echo "$image"
