#!/usr/bin/env bash
# The kind tier: a real kind cluster (one control plane, one worker), the chart's operator pod on it,
# and the cluster and workers tiers' tests against it: real kubelets running the CPU worker image.
#
#   hack/kind/run.sh up          a Docker engine (docker.sh), kind, the node image, the cluster, kwok's fake pools
#   hack/kind/run.sh images      the operator image (docker build) and the CPU worker image, loaded into the worker
#   hack/kind/run.sh install     the chart into namespace llama-operator (restricted); its operator pod Ready
#   hack/kind/run.sh test        pytest -m "cluster or workers" against the cluster (KIND_PYTEST_ARGS adds args)
#   hack/kind/run.sh down        delete the cluster and stop its kwok
#   hack/kind/run.sh all         down, up, images, install, test, then down (KEEP_CLUSTER=1 keeps the cluster;
#                                a failure first saves the nodes' logs under ~/.cache/llama-operator/kind/logs)
#   hack/kind/run.sh env         export lines for this cluster: KUBECONFIG, DOCKER_HOST, PATH
#   hack/kind/run.sh resources K=N ...   extended resources on the worker, e.g. nvidia.com/gpu=8 (K=0 removes)
#   hack/kind/run.sh config [IMAGE]      the kind config `up` creates the cluster with (for that node image)
# Several steps run in order: `hack/kind/run.sh up images install` leaves a cluster with the operator running.
#
# Node image: where this script starts its own dockerd (no engine was running, as in CI) it builds one
# offline (node-image.sh); where a Docker engine already answers it uses kind's default image, which is
# pulled. KIND_NODE_IMAGE=offline builds the offline one anyway; KIND_NODE_IMAGE=IMAGE uses IMAGE.
# Environment: KIND_CLUSTER_NAME (default $LLAMAOP_CLUSTER_NAME, else llamaop), KIND_VERSION,
# LLAMAOP_BASE_IMAGE (the operator image's base, see images.sh), KIND_FAKE_POOLS=0 (no kwok nodes),
# KEEP_OPERATOR=1 (leave the installed operator running during the tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
source hack/cluster/versions.env
source hack/workers/images.env

name=${KIND_CLUSTER_NAME:-${LLAMAOP_CLUSTER_NAME:-llamaop}}
KIND_VERSION=${KIND_VERSION:-0.33.0}
bindir=$(hack/cluster/build.sh --print-bindir)
cache=$(dirname "$(dirname "$bindir")")
kind=$cache/kind-v$KIND_VERSION/kind
state=$cache/kind/clusters/$name
kubeconfig=$state/kubeconfig
worker=$name-worker
# Checkpoint volumes: this directory is mounted into the worker node at /mnt/llamaop-volumes, so local
# PersistentVolumes there are files the tests read here (hack/workers/node.sh volume makes them).
volumes=$state/volumes
node_volumes=/mnt/llamaop-volumes
release=llama-operator
namespace=llama-operator
py=${PYTHON:-$root/.venv/bin/python}
export PATH=$bindir:$PATH KUBECONFIG=$kubeconfig
log() { printf '[kind] %s\n' "$*" >&2; }

docker_up() { # exports DOCKER_HOST (empty: the machine's own engine); sets $offline
  local line
  line=$("$here/docker.sh" up)
  export DOCKER_HOST=${line#DOCKER_HOST=}
  [[ -n $DOCKER_HOST ]] || unset DOCKER_HOST
  # Our own dockerd means a machine without a usable engine, and so (in CI) without a registry.
  offline=false
  [[ ${DOCKER_HOST:-} != unix:///run/llamaop/docker.sock && ${KIND_NODE_IMAGE:-} != offline ]] || offline=true
}

ensure_tools() {
  BUILD_ONLY="kubectl helm kwok" hack/cluster/build.sh >/dev/null
  if [[ ! -x $kind ]]; then
    log "building kind v$KIND_VERSION from its Go module"
    local t0=$SECONDS
    GOBIN=$(dirname "$kind") CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@v$KIND_VERSION"
    log "built kind in $((SECONDS - t0))s"
  fi
}

node_image() {
  case ${KIND_NODE_IMAGE:-} in
    offline) "$here/node-image.sh" ;;
    "") if $offline; then "$here/node-image.sh"; fi ;;  # empty: kind's default image
    *) echo "$KIND_NODE_IMAGE" ;;
  esac
}

# The worker stands in for the workers tier's real node: the same labels (hack/workers/node.sh) and
# taint, so tests/workers runs unchanged against either.
real_node_labels() {
  cat <<'YAML'
    llamaop.io/pool: cpu-local
    node.kubernetes.io/instance-type: local
    karpenter.sh/capacity-type: on-demand
    llamaop.io/real-node: "true"
    topology.kubernetes.io/region: local
    topology.kubernetes.io/zone: local-a
YAML
}

config() { # image -> the kind config on stdout
  cat <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # Not 10.244.0.0/16, kind's default: the workers tier's host rules (hack/workers/node.sh) own
  # 10.244.0.0/24, and with br_netfilter on they also see the traffic kind's nodes bridge.
  podSubnet: 10.240.0.0/16
  # nftables: kube-proxy's image carries nft, and needs no iptables flavour to match the host's.
  kubeProxyMode: nftables
nodes:
- role: control-plane
- role: worker
  labels:
$(real_node_labels)
  extraMounts:
  - {hostPath: $volumes, containerPath: $node_volumes}
  kubeadmConfigPatches:
  - |
    kind: JoinConfiguration
    nodeRegistration:
      taints: [{key: llamaop.io/real-node, value: "true", effect: NoSchedule}]
kubeadmConfigPatches:
- |
  # Kubernetes 1.35's kubelet refuses cgroup v1 hosts (this CI's) unless told otherwise.
  kind: KubeletConfiguration
  failCgroupV1: false
YAML
  if [[ $1 == localhost/llamaop-kind-node:* ]]; then cat <<YAML
- |
  # The offline node image's etcd and CoreDNS are this project's pinned versions (node-image.sh).
  kind: ClusterConfiguration
  etcd: {local: {imageTag: "$ETCD_VERSION"}}
  dns: {imageTag: "v$COREDNS_VERSION"}
YAML
  fi
}

kwok_pid() { [[ -f $state/kwok.pid ]] && kill -0 "$(<"$state/kwok.pid")" 2>/dev/null && cat "$state/kwok.pid"; }

# The cluster tier's fake pools (hack/cluster/pools.yaml) beside the real nodes, faked by a kwok
# controller on this machine exactly as in the local cluster (the same stages); it manages only the
# nodes annotated as fake, never kind's.
fake_pools() {
  if ! kwok_pid >/dev/null; then
    setsid kwok --kubeconfig "$kubeconfig" --config hack/cluster/stages.yaml --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --node-lease-duration-seconds=40 \
      >"$state/kwok.log" 2>&1 </dev/null 9>&- &
    echo $! >"$state/kwok.pid"
  fi
  "$py" hack/cluster/nodes.py | kubectl apply --server-side -f - >/dev/null
  kubectl wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null
}

up() {
  docker_up
  ensure_tools
  local image t0=$SECONDS
  image=$(node_image)
  mkdir -p "$state" "$volumes"
  if ! "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    config "$image" >"$state/kind-config.yaml"
    log "creating cluster '$name' from ${image:-the default node image of kind}"
    "$kind" create cluster --name "$name" --config "$state/kind-config.yaml" --kubeconfig "$kubeconfig" \
      ${image:+--image "$image"} --wait 180s
  else
    "$kind" export kubeconfig --name "$name" --kubeconfig "$kubeconfig" >/dev/null
  fi
  kubectl wait --for=condition=Ready node --all --timeout=180s >/dev/null
  [[ ${KIND_FAKE_POOLS:-1} == 0 ]] || fake_pools
  log "cluster '$name' up in $((SECONDS - t0))s; KUBECONFIG=$kubeconfig"
}

images() {
  docker_up
  ensure_tools
  local out operator cpu cpu_layout archive base=${LLAMAOP_BASE_IMAGE:-}
  $offline && base=${base:-debootstrap}
  out=$(LLAMAOP_BASE_IMAGE=$base "$here/images.sh")
  operator=$(sed -n 's/^operator=//p' <<<"$out")
  read -r cpu cpu_layout < <(sed -n 's/^cpu=//p' <<<"$out")
  # Only the worker runs these: the control plane is tainted.
  "$kind" load docker-image "$operator" --name "$name" --nodes "$worker"
  archive=$state/cpu-image.tar
  tar -C "$cpu_layout" -cf "$archive" .
  "$kind" load image-archive "$archive" --name "$name" --nodes "$worker"
  rm -f "$archive"
  log "loaded $operator and $cpu into $worker"
}

install() {
  ensure_tools
  kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
  kubectl label namespace "$namespace" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted >/dev/null
  # The real operator, on a real kubelet, under the restricted standard: rollout status proves it runs.
  helm upgrade --install "$release" charts/llama-operator -n "$namespace" -f "$here/values.yaml" \
    --set "workerImages.cpu=$CPU_WORKER_IMAGE" --set replicaCount=1 --wait --timeout 180s >/dev/null
  kubectl -n "$namespace" rollout status "deployment/$release" --timeout 120s
  kubectl -n "$namespace" get pods -o wide
}

test_env() { # what the tests need to know about this cluster (tests/conftest.py, tests/workers/node.py)
  echo "LLAMAOP_TEST_KUBECONFIG=$kubeconfig LLAMAOP_TEST_HELM_VALUES=$here/values.yaml" \
    "LLAMAOP_WORKER_NODE=$worker LLAMAOP_WORKER_KUBECONFIG=$kubeconfig" \
    "LLAMAOP_VOLUMES_DIR=$volumes LLAMAOP_VOLUMES_NODE_DIR=$node_volumes"
}

run_tests() {
  ensure_tools
  if [[ ${KEEP_OPERATOR:-} != 1 ]] && helm status "$release" -n "$namespace" >/dev/null 2>&1; then
    # The tests start operators of their own; a second standalone operator would act on their jobs.
    helm upgrade "$release" charts/llama-operator -n "$namespace" --reuse-values --set replicaCount=0 --wait >/dev/null
  fi
  local args
  read -r -a args <<<"${KIND_PYTEST_ARGS:-}"
  # shellcheck disable=SC2046
  env $(test_env) "$py" -m pytest -m "cluster or workers" tests/cluster tests/workers "${args[@]}"
}

down() {
  if [[ -x $kind ]] && "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    "$kind" delete cluster --name "$name"
  fi
  local pid
  if pid=$(kwok_pid); then kill "$pid"; fi
  rm -rf "$state"
}

finish() { # after `all`: keep what a failure needs to be understood, then delete the cluster
  local rc=$? dir
  if ((rc != 0)) && "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    dir=$cache/kind/logs/$name-$(date +%Y%m%d-%H%M%S)
    "$kind" export logs "$dir" --name "$name" >/dev/null 2>&1 || true  # (crictl's part fails: no crictl)
    mkdir -p "$dir"; cp "$state/kwok.log" "$dir/" 2>/dev/null || true
    log "failed; the nodes' logs (kubelet, containerd, pods) are in $dir"
  fi
  [[ ${KEEP_CLUSTER:-} == 1 ]] || { docker_up >/dev/null; down; }
  return "$rc"
}

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -gt 0 ]] || usage
case $1 in
  resources) shift; env $(test_env) hack/workers/node.sh resources "$@"; exit ;;
  config) config "${2:-}"; exit ;;
esac
# Steps run in the order given: `hack/kind/run.sh up images install` brings up a cluster to use.
for step in "$@"; do
  case $step in
    up) up ;;
    images) images ;;
    install) install ;;
    test) run_tests ;;
    down) docker_up >/dev/null; down ;;
    env) docker_up; echo "export KUBECONFIG=$kubeconfig PATH=$bindir:\$PATH${DOCKER_HOST:+ DOCKER_HOST=$DOCKER_HOST}" ;;
    all)
      t0=$SECONDS
      # A fresh cluster every time: one left by an interrupted run (or a dockerd restart) proves nothing.
      docker_up >/dev/null; down
      trap finish EXIT
      up; images; install; run_tests
      log "kind tier passed in $((SECONDS - t0))s" ;;
    *) usage ;;
  esac
done
