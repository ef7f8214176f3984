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
echo "== serving: tensor parallel over 2 processes against 1, on the same cores (hack/bench/serving.py)"
# llama3-1b's layer shape cut to 2 layers, as docs/serving.md measures it; the ratio is the figure.
model='{"base": "llama3-1b", "num_hidden_layers": 2, "vocab_size": 16384, "bos_token_id": 256, "eos_token_id": 257}'
tps() { sed -n 's/^RESULT [a-z0-9]*: \([0-9.,]*\) tokens\/s.*/\1/p' | tr -d ,; }
tp1=$($py hack/bench/serving.py --name tp1 --max-tokens 32 -- $py -m llama_runtime serve --backend cpu --model "$model" | tee /dev/stderr | tps)
tp2=$(LLAMAOP_DEVICES=2 LLAMAOP_BACKEND=cpu LLAMAOP_MODEL="$model" \
  $py hack/bench/serving.py --name tp2 --max-tokens 32 -- $py -m llama_runtime launch serve | tee /dev/stderr | tps)
$py -c "import sys; print(f'ratio serving TP 2 / TP 1 tokens/s: {float(sys.argv[2]) / float(sys.argv[1]):.2f}')" "$tp1" "$tp2"
echo
echo "== operator: 1,000 LlamaJobs on 528 fake nodes against the same pods alone (hack/bench/operator_at_scale.py)"
$py hack/bench/operator_at_scale.py --runs "$runs" --keep
echo
echo "== operator: started with the 1,000 LlamaJobs already waiting (hack/bench/operator_at_scale.py --backlog)"
$py hack/bench/operator_at_scale.py --runs "$runs" --backlog
echo
echo "GPU: hack/bench/gpu.sh runs on a one-GPU machine (tokens/s and MFU of a llama3-1b step)."
