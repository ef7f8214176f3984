#!/usr/bin/env bash
# The local Kubernetes cluster for demos and tests: real etcd, kube-apiserver, kube-scheduler and
# kube-controller-manager (built from their Go modules by cluster/build.sh) run by
# `kwokctl --runtime binary`; kwok fakes the Neuron, GPU and CPU nodes listed in cluster/pools.yaml.
#
#   hack/cluster.sh up          start (idempotent: returns at once when already up)
#   hack/cluster.sh down        stop and delete
#   hack/cluster.sh status      each pool with its nodes and free accelerators
#   hack/cluster.sh kubeconfig  print the kubeconfig path
#   hack/cluster.sh env         print `export` lines (PATH with the binaries, KUBECONFIG)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/hack/cluster
source "$here/versions.env"

name=${LLAMAOP_CLUSTER_NAME:-llamaop}
bindir=$("$here/build.sh" --print-bindir)
export KWOK_WORKDIR=${KWOK_WORKDIR:-$(dirname "$(dirname "$bindir")")/kwok}
workdir=$KWOK_WORKDIR/clusters/$name
kubeconfig=$workdir/kubeconfig.yaml
export PATH=$bindir:$PATH
py=${PYTHON:-$root/.venv/bin/python}

log() { printf '[cluster] %s\n' "$*" >&2; }

healthy() {
  [[ -f $kubeconfig ]] && kubectl --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1
}

write_config() {
  local cfg=$KWOK_WORKDIR/$name.kwokctl.yaml
  mkdir -p "$KWOK_WORKDIR"
  cat > "$cfg" <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: v$K8S_VERSION
  kwokVersion: v$KWOK_VERSION
  etcdVersion: v$ETCD_VERSION
  kubeApiserverBinary: $bindir/kube-apiserver
  kubeControllerManagerBinary: $bindir/kube-controller-manager
  kubeSchedulerBinary: $bindir/kube-scheduler
  kubectlBinary: $bindir/kubectl
  etcdBinary: $bindir/etcd
  kwokControllerBinary: $bindir/kwok
  kubeAuthorization: true
  kubeAdmission: true
  disableQPSLimits: true
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - {key: max-requests-inflight, value: "1000"}
  - {key: max-mutating-requests-inflight, value: "500"}
YAML
  echo "$cfg"
}

up() {
  if healthy; then log "cluster '$name' is already up"; return 0; fi
  "$here/build.sh" >/dev/null
  local t0=$SECONDS cfg
  if [[ -d $workdir ]]; then
    log "restarting cluster '$name'"
    kwokctl start cluster --name "$name" >/dev/null 2>&1 || kwokctl delete cluster --name "$name" >/dev/null 2>&1 || true
  fi
  if ! healthy; then
    cfg=$(write_config)
    log "creating cluster '$name' (Kubernetes v$K8S_VERSION, kwok v$KWOK_VERSION)"
    kwokctl create cluster --name "$name" --config "$cfg" --config "$here/stages.yaml" --wait 120s \
      >"$KWOK_WORKDIR/$name.create.log" 2>&1 || { cat "$KWOK_WORKDIR/$name.create.log" >&2; exit 1; }
  fi
  "$py" "$here/nodes.py" | kubectl --kubeconfig "$kubeconfig" apply --server-side -f - >/dev/null
  kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null
  log "cluster '$name' up in $((SECONDS - t0))s; KUBECONFIG=$kubeconfig"
}

down() {
  kwokctl delete cluster --name "$name" >/dev/null 2>&1 || true
  log "cluster '$name' deleted"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) healthy || { log "cluster '$name' is not running"; exit 1; }
    KUBECONFIG=$kubeconfig "$py" "$here/status.py" ;;
  kubeconfig) echo "$kubeconfig" ;;
  env) echo "export PATH=$bindir:\$PATH KUBECONFIG=$kubeconfig" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
