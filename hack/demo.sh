#!/usr/bin/env bash
# `make demo`: the local cluster, the operator, the examples, and where each job went and why.
#   hack/demo.sh        set up, run the operator in the background, apply examples/, show the decisions
#   hack/demo.sh stop   stop the demo's operator (the cluster stays: hack/cluster.sh down removes it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run_dir=${XDG_CACHE_HOME:-$HOME/.cache}/llama-operator/demo
mkdir -p "$run_dir"
pid_file=$run_dir/operator.pid

stop() {
  if [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill "$(cat "$pid_file")" && echo "[demo] operator stopped"
  fi
  rm -f "$pid_file"
}
if [[ ${1:-} == stop ]]; then stop; exit 0; fi

hack/cluster.sh up
eval "$(hack/cluster.sh env)"
export KUBECONFIG

echo "[demo] installing the CRDs and the example AcceleratorPools"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/llamajobs.llamaop.io crd/acceleratorpools.llamaop.io >/dev/null
kubectl apply --server-side --force-conflicts -f examples/pools/ >/dev/null

stop
echo "[demo] starting the operator (log: $run_dir/operator.log)"
nohup .venv/bin/llamaop run --all-namespaces --standalone --metrics-port 8080 --health-port 0 \
  --log-format console >"$run_dir/operator.log" 2>&1 &
echo $! >"$pid_file"

kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl delete llamajobs --all -n demo --wait=true >/dev/null 2>&1 || true
echo "[demo] applying examples/*.yaml"
kubectl apply -n demo -f examples/ >/dev/null
total=$(ls examples/*.yaml | wc -l)
for _ in $(seq 60); do
  decided=$(kubectl get lj -n demo --no-headers -o custom-columns=P:.status.phase | grep -cvE '^<none>$|^$' || true)
  [[ $decided -ge $(kubectl get lj -n demo --no-headers | wc -l) ]] && break
  sleep 1
done
sleep 2

echo
hack/cluster.sh status
echo
kubectl get lj -n demo
echo
echo "Why each job went where it did (the latest entry of status.placements, else status.message; the table is status.candidates):"
kubectl get lj -n demo -o json | .venv/bin/python hack/explain.py --why
echo
echo "Every pool each job was weighed against:"
kubectl get lj -n demo -o json | .venv/bin/python hack/explain.py
echo "The operator keeps running in the background (metrics: http://localhost:8080/metrics)."
echo "Stop it with 'hack/demo.sh stop'; remove the cluster with 'hack/cluster.sh down'."
echo "Plan any job without a cluster: .venv/bin/llamaop plan examples/<file>.yaml"
