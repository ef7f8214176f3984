#!/usr/bin/env bash
# The cluster tests against a kind cluster, for machines with a Docker engine.
#
#   hack/kind/run.sh up        kind cluster (kind-config.yaml) with Neuron, GPU and CPU worker nodes
#   hack/kind/run.sh images    build the operator and CPU worker images and `kind load` them
#   hack/kind/run.sh install   the chart into namespace llama-operator (restricted), operator Ready
#   hack/kind/run.sh test      pytest -m cluster with LLAMAOP_TEST_KUBECONFIG set to the kind cluster
#   hack/kind/run.sh down      delete the cluster
#   hack/kind/run.sh all       up, images, install, test, then down (KEEP_CLUSTER=1 keeps it)
#
# Environment: KIND_CLUSTER_NAME (llamaop), KIND_NODE_IMAGE (kind's default node image), KIND_VERSION,
# LLAMAOP_BASE_IMAGE (see images.sh), KIND_PYTEST_ARGS (default: tests/cluster except the local
# cluster's own tests), KEEP_OPERATOR=1 (leave the installed operator running during the tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

name=${KIND_CLUSTER_NAME:-llamaop}
KIND_VERSION=${KIND_VERSION:-0.33.0}
bindir=$(hack/cluster/build.sh --print-bindir)
cache=$(dirname "$(dirname "$bindir")")
kind=$cache/kind-v$KIND_VERSION/kind
kubeconfig=$cache/kind/$name.kubeconfig
release=llama-operator
namespace=llama-operator
py=${PYTHON:-$root/.venv/bin/python}
export PATH=$bindir:$PATH KUBECONFIG=$kubeconfig
log() { printf '[kind] %s\n' "$*" >&2; }

ensure_tools() {
  BUILD_ONLY="kubectl helm" hack/cluster/build.sh >/dev/null
  if [[ ! -x $kind ]]; then
    log "building kind v$KIND_VERSION from its Go module"
    GOBIN=$(dirname "$kind") go install "sigs.k8s.io/kind@v$KIND_VERSION"
  fi
}

up() {
  ensure_tools
  mkdir -p "$(dirname "$kubeconfig")"
  if ! "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    local image=()
    [[ -n ${KIND_NODE_IMAGE:-} ]] && image=(--image "$KIND_NODE_IMAGE")
    "$kind" create cluster --name "$name" --config "$here/kind-config.yaml" --kubeconfig "$kubeconfig" \
      "${image[@]}" --wait 180s
  else
    "$kind" export kubeconfig --name "$name" --kubeconfig "$kubeconfig" >/dev/null
  fi
  "$py" "$here/nodes.py"
}

images() {
  ensure_tools
  local out operator cpu cpu_layout archive
  out=$("$here/images.sh")
  operator=$(sed -n 's/^operator=//p' <<<"$out")
  read -r cpu cpu_layout < <(sed -n 's/^cpu=//p' <<<"$out")
  "$kind" load docker-image "$operator" --name "$name"
  archive=$(mktemp --suffix=.tar)
  tar -C "$cpu_layout" -cf "$archive" .
  "$kind" load image-archive "$archive" --name "$name"
  rm -f "$archive"
  log "loaded $operator and $cpu"
}

install() {
  ensure_tools
  source hack/workers/images.env
  kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
  kubectl label namespace "$namespace" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted
  # The real operator, on a real kubelet, under the restricted standard: rollout status proves it runs.
  helm upgrade --install "$release" charts/llama-operator -n "$namespace" -f "$here/values.yaml" \
    --set "workerImages.cpu=$CPU_WORKER_IMAGE" --set replicaCount=1 --wait --timeout 180s
  kubectl -n "$namespace" rollout status "deployment/$release" --timeout 120s
}

run_tests() {
  ensure_tools
  if [[ ${KEEP_OPERATOR:-} != 1 ]]; then
    # The tests start operators of their own; a second standalone operator would act on their jobs.
    helm upgrade "$release" charts/llama-operator -n "$namespace" --reuse-values --set replicaCount=0 --wait
  fi
  local args
  read -r -a args <<<"${KIND_PYTEST_ARGS:-tests/cluster --ignore=tests/cluster/test_local_cluster.py}"
  LLAMAOP_TEST_KUBECONFIG=$kubeconfig "$py" -m pytest -m cluster "${args[@]}"
}

down() {
  [[ -x $kind ]] && "$kind" delete cluster --name "$name" || true
}

case ${1:-} in
  up) up ;;
  images) images ;;
  install) install ;;
  test) run_tests ;;
  down) down ;;
  all)
    [[ ${KEEP_CLUSTER:-} == 1 ]] || trap down EXIT
    up; images; install; run_tests ;;
  *) sed -n '2,13p' "$here/run.sh" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
