#!/usr/bin/env bash
# The local Kubernetes cluster for demos and tests: real etcd, kube-apiserver, kube-scheduler and
# kube-controller-manager (built from their Go modules by cluster/build.sh) run by
# `kwokctl --runtime binary`; kwok fakes the Neuron, GPU and CPU nodes listed in cluster/pools.yaml.
#
#   hack/cluster.sh up          start (idempotent: returns at once when already up)
#   hack/cluster.sh up --workers  also a real node (kubelet, containerd, CoreDNS, kube-proxy): hack/workers/
#   hack/cluster.sh down        stop and delete (the real node too)
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
  # Pods on the real node (up --workers) reach the API server through the kubernetes Service's IP.
  kubeApiserverCertSANs: [10.0.0.1]
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - {key: max-requests-inflight, value: "1000"}
  - {key: max-mutating-requests-inflight, value: "500"}
  # So that logs and exec reach the real node's kubelet (which rejects anonymous clients) at its IP,
  # not at its host name, which no resolver knows.
  - {key: kubelet-client-certificate, value: $workdir/pki/admin.crt}
  - {key: kubelet-client-key, value: $workdir/pki/admin.key}
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
# kwok's binary runtime manages every node by default; later flags win, so kwok keeps to the fake
# nodes (nodes.py annotates them) and leaves the real node to its kubelet.
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false"}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
---
# Each fake node stands for a kubelet of its own, and hundreds of kubelets start pods side by side: kwok's
# default of 4 parallel stage players would make pod starts, not the operator, the bottleneck of a burst.
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:  # kwokctl does not default a document given to it, so kwok's defaults are spelled out here
  cidr: 10.0.0.0/24
  podPlayStageParallelism: 32
  nodePlayStageParallelism: 8
  nodeLeaseParallelism: 8
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
  enableDebuggingHandlers: true
  enableProfilingHandler: true
  enableContentionProfiling: false
YAML
  echo "$cfg"
}

# A cluster created by an older cluster.sh lacks what the real node needs (see write_config).
workers_ready() {
  grep -q manage-nodes-with-annotation-selector "$workdir/kwok.yaml" 2>/dev/null &&
    grep -q kubelet-preferred-address-types "$workdir/kwok.yaml" &&
    [[ $(openssl x509 -in "$workdir/pki/admin.crt" -noout -ext subjectAltName 2>/dev/null) == *"IP Address:10.0.0.1"* ]]
}

# Right after a (re)start kwok may drop a pod bound to a node it has not listed yet, and nothing makes
# it look again; a probe pod that reaches Running proves it is past that, so the first real pod is safe.
kwok_serves_pods() {
  local k="kubectl --kubeconfig $kubeconfig -n default" probe
  for i in $(seq 1 12); do
    probe=llamaop-kwok-probe-$i
    $k run "$probe" --image=registry.k8s.io/pause:3.10 --restart=Never \
      --overrides='{"apiVersion":"v1","spec":{"nodeSelector":{"type":"kwok","llamaop.io/pool":"cpu-m7i-od"}}}' >/dev/null
    if $k wait --for=jsonpath='{.status.phase}'=Running "pod/$probe" --timeout=5s >/dev/null 2>&1; then
      $k delete pod "$probe" --wait=false >/dev/null
      return 0
    fi
    $k delete pod "$probe" --wait=false >/dev/null
  done
  log "kwok did not run a probe pod within a minute"
  return 1
}

up() {
  if [[ ${1:-} == --workers ]] && [[ -d $workdir ]] && ! workers_ready; then
    log "cluster '$name' was created without real-node support; recreating it"
    down
  fi
  if healthy; then log "cluster '$name' is already up"; [[ ${1:-} != --workers ]] || "$root/hack/workers/node.sh" up; return 0; fi
  "$here/build.sh" >/dev/null
  local t0=$SECONDS cfg
  if [[ -d $workdir ]]; then
    # A cluster left stopped (a new CI run, a reboot) is made anew: restarting it half-works at times
    # (kwok then ignores pods), and tests and the demo create everything they need anyway.
    log "recreating stopped cluster '$name'"
    kwokctl delete cluster --name "$name" >/dev/null 2>&1 || true
  fi
  if ! healthy; then
    cfg=$(write_config)
    log "creating cluster '$name' (Kubernetes v$K8S_VERSION, kwok v$KWOK_VERSION)"
    kwokctl create cluster --name "$name" --config "$cfg" --config "$here/stages.yaml" --wait 120s \
      >"$KWOK_WORKDIR/$name.create.log" 2>&1 || { cat "$KWOK_WORKDIR/$name.create.log" >&2; exit 1; }
  fi
  "$py" "$here/nodes.py" --scale "${LLAMAOP_NODE_SCALE:-1}" | kubectl --kubeconfig "$kubeconfig" apply --server-side -f - >/dev/null
  kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null
  kwok_serves_pods
  log "cluster '$name' up in $((SECONDS - t0))s; KUBECONFIG=$kubeconfig"
  [[ ${1:-} != --workers ]] || "$root/hack/workers/node.sh" up
}

down() {
  # The real node first, while the API server can still tell its kubelet to stop the pods.
  if [[ -x $root/hack/workers/node.sh ]]; then "$root/hack/workers/node.sh" down; fi
  kwokctl delete cluster --name "$name" >/dev/null 2>&1 || true
  log "cluster '$name' deleted"
}

case ${1:-} in
  up) up "${2:-}" ;;
  down) down ;;
  status) healthy || { log "cluster '$name' is not running"; exit 1; }
    KUBECONFIG=$kubeconfig "$py" "$here/status.py" ;;
  kubeconfig) echo "$kubeconfig" ;;
  env) echo "export PATH=$bindir:\$PATH KUBECONFIG=$kubeconfig" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
