#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules into a per-user cache outside the
# checkout, so fresh clones and CI reuse them. Nothing is downloaded but Go modules.
# Usage: hack/cluster/build.sh [--print-bindir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${LLAMAOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-operator}
bindir="$cache_root/k8s-v${K8S_VERSION}_etcd-v${ETCD_VERSION}_kwok-v${KWOK_VERSION}_helm-v${HELM_VERSION}/bin"
if [[ "${1:-}" == "--print-bindir" ]]; then echo "$bindir"; exit 0; fi
mkdir -p "$bindir"
export GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[build] %s\n' "$*" >&2; }

# Keep a wrapper module's pins equal to versions.env (the one place they are set).
pin() { # dir module version
  local dir=$1 mod=$2 ver=$3
  if ! grep -qE "^\s*(require )?$mod v$ver\$" "$dir/go.mod"; then
    log "re-pinning $mod to v$ver"
    (cd "$dir" && go mod edit -require="$mod@v$ver" && go mod tidy)
  fi
}

pin_kubernetes() {
  local dir=$here/gomod/kubernetes minor=0.${K8S_VERSION#1.}
  if ! grep -qE "^\s*(require )?k8s.io/kubernetes v$K8S_VERSION\$" "$dir/go.mod"; then
    log "re-pinning k8s.io/kubernetes to v$K8S_VERSION and its staging modules to v$minor"
    (cd "$dir" && go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION" &&
      for m in $(sed -n 's/^\t\(k8s.io\/[a-z-]*\) => .*/\1/p' go.mod); do go mod edit -replace="$m=$m@v$minor"; done &&
      go mod tidy)
  fi
}

k8s_ldflags() {
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local f="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

# helm's release build (its Makefile) stamps the Kubernetes version of its client-go module into the
# binary; without it `helm template` assumes Kubernetes v1.20.0 and refuses charts that need newer.
helm_ldflags() {
  local minor
  minor=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$here/gomod/helm/go.mod")
  local f="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    f+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$f"
}

build() { # dir out package ldflags
  if [[ -x "$bindir/$2" ]]; then return 0; fi
  compile "$@"
}

compile() { # dir out package ldflags: replaces the binary in one rename (users of the old one keep it)
  local dir=$1 out=$2 pkg=$3 ldflags=$4
  log "building $out from $pkg"
  local t0=$SECONDS
  # A temporary name of this process's own: two builds at once must not write one file.
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$bindir/$out.tmp.$$" "$pkg")
  mv "$bindir/$out.tmp.$$" "$bindir/$out"
  log "built $out in $((SECONDS - t0))s"
}

want=${BUILD_ONLY:-"kube-apiserver kube-scheduler kube-controller-manager kubectl kubelet etcd kwok kwokctl helm"}
for c in $want; do
  case $c in
    kube-apiserver|kube-scheduler|kube-controller-manager|kubectl|kubelet|kube-proxy|kubeadm)  # kubeadm: kind's nodes
      [[ -x "$bindir/$c" ]] || { pin_kubernetes; build "$here/gomod/kubernetes" "$c" "k8s.io/kubernetes/cmd/$c" "$(k8s_ldflags)"; } ;;
    etcd)
      [[ -x "$bindir/etcd" ]] || { pin "$here/gomod/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
        build "$here/gomod/etcd" etcd go.etcd.io/etcd/server/v3 "-s -w"; } ;;
    coredns) # not part of the bin dir's name: a new version or plugin list replaces the binary in place
      key=$(sha256sum <"$here/gomod/coredns/main.go" | cut -c1-16)
      if [[ ! -x "$bindir/coredns" || $("$bindir/coredns" -version 2>/dev/null | head -1) != "CoreDNS-$COREDNS_VERSION" ||
            $(cat "$bindir/coredns.key" 2>/dev/null) != "$key" ]]; then
        rm -f "$bindir/coredns"; pin "$here/gomod/coredns" github.com/coredns/coredns "$COREDNS_VERSION"
        build "$here/gomod/coredns" coredns . "-s -w"
        echo "$key" >"$bindir/coredns.key"
      fi ;;
    helm) # the ldflags live beside the binary: a helm built with others (older caches) is rebuilt once
      if [[ ! -x "$bindir/helm" || $(cat "$bindir/helm.ldflags" 2>/dev/null) != "$(helm_ldflags)" ]]; then
        pin "$here/gomod/helm" helm.sh/helm/v3 "$HELM_VERSION"
        compile "$here/gomod/helm" helm helm.sh/helm/v3/cmd/helm "$(helm_ldflags)"
        helm_ldflags >"$bindir/helm.ldflags"
      fi ;;
    kwok|kwokctl)
      if [[ ! -x "$bindir/$c" ]]; then
        log "building $c v$KWOK_VERSION"
        t0=$SECONDS
        GOBIN="$bindir" go install -trimpath \
          -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION" \
          "sigs.k8s.io/kwok/cmd/$c@v$KWOK_VERSION"
        log "built $c in $((SECONDS - t0))s"
      fi ;;
    *) log "unknown component $c"; exit 2 ;;
  esac
done
echo "$bindir"
