#!/usr/bin/env bash
# `make bench`: every benchmark, each printing numbers and ratios against a baseline run in the same
# command. Nothing here is asserted; run on a quiet machine and compare runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
export PYTHONUNBUFFERED=1
echo "== planner: decision latency and cost against the baselines (hack/bench/planner.py)"
$py hack/bench/planner.py
echo
echo "== runtime: CPU training tokens/s against a plain transformers loop (hack/bench/runtime.py)"
$py hack/bench/runtime.py
echo
echo "== operator: 1,000 LlamaJobs on 500+ fake nodes (hack/bench/operator_at_scale.py)"
$py hack/bench/operator_at_scale.py
echo
echo "== operator: started with the same 1,000 LlamaJobs already waiting (hack/bench/operator_at_scale.py --backlog)"
$py hack/bench/operator_at_scale.py --backlog
echo
echo "GPU: hack/bench/gpu.sh runs on a one-GPU machine (tokens/s and MFU of a llama3-1b step)."
