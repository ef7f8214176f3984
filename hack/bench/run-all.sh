#!/usr/bin/env bash
# `make bench`: every benchmark, each printing its figures as ratios to a baseline or floor measured in
# the same run (absolute seconds differ twice over between machines and between runs on a shared one).
# Nothing here is asserted. BENCH_RUNS=3 repeats the operator's floor/operator pairs (default 1).
# The operator's bench cluster is $LLAMAOP_CLUSTER_NAME-bench (default llamaop-bench), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
runs=${BENCH_RUNS:-1}
export PYTHONUNBUFFERED=1
echo "== planner: CPU per decision and cost against first-fit on the same queue (hack/bench/planner.py)"
$py hack/bench/planner.py
echo
echo "== runtime: CPU training tokens/s against a plain transformers loop (hack/bench/runtime.py)"
$py hack/bench/runtime.py
echo
echo "== replanning: passes over 10,000 queued jobs on 1,000 nodes against a full pass (hack/bench/replan.py)"
$py hack/bench/replan.py
echo
echo "== operator: 1,000 LlamaJobs on 528 fake nodes against the same pods alone (hack/bench/operator_at_scale.py)"
$py hack/bench/operator_at_scale.py --runs "$runs" --keep
echo
echo "== operator: started with the 1,000 LlamaJobs already waiting (hack/bench/operator_at_scale.py --backlog)"
$py hack/bench/operator_at_scale.py --runs "$runs" --backlog
echo
echo "GPU: hack/bench/gpu.sh runs on a one-GPU machine (tokens/s and MFU of a llama3-1b step)."
