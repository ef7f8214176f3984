#!/usr/bin/env bash
# On a one-GPU machine: training tokens/s and MFU of one llama3-1b step (eager and compiled), then
# serving tokens/s through the CUDA path: the runtime's own engine on cuda, and vLLM through the pod's
# launcher (`python -m llama_runtime launch serve`, engine vllm) when vLLM is installed. About 8-12 min.
# For a machine with torch + transformers + safetensors + numpy + prometheus-client (the project's
# `runtime` extra); it installs nothing and needs no network. Extra arguments go to
# hack/bench/runtime_gpu.py (e.g. --batch 32 --micro 8, --modes compiled).
# Usage: hack/bench/gpu.sh [ARGS]      PYTHON=/path/to/python hack/bench/gpu.sh
#        GPU_BENCH=serve hack/bench/gpu.sh   (serving only; GPU_BENCH=train: training only)
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
what=${GPU_BENCH:-all}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD/workloads${PYTHONPATH:+:$PYTHONPATH}"
status=0
if [[ $what != serve ]]; then
  # Per-run budget; a hung compile cannot eat the whole lease.
  timeout --signal=INT 420 "$py" hack/bench/runtime_gpu.py "$@" || status=$?
fi
if [[ $what != train ]]; then
  model=${SERVE_MODEL:-llama3-1b}   # seeded (untrained) weights: tokens/s does not depend on their values
  load=(--requests "${SERVE_REQUESTS:-64}" --concurrency "${SERVE_CONCURRENCY:-32}" --max-tokens "${SERVE_TOKENS:-128}")
  # The runtime's engine on one GPU (bf16, batches of up to 32 sharing a KV cache).
  timeout --signal=INT 300 "$py" hack/bench/serving.py --name "llama-runtime-cuda-$model" "${load[@]}" -- \
    "$py" -m llama_runtime serve --backend cuda --model "$model" --precision bf16 --max-batch 32 \
    --max-new-tokens 256 --host 127.0.0.1 || status=$?
  # vLLM as a CUDA pool's pod runs it: the launcher counts the GPU and execs `vllm serve`.
  if "$py" -c 'import vllm' 2>/dev/null; then
    LLAMAOP_BACKEND=cuda LLAMAOP_ENGINE=vllm LLAMAOP_DEVICES=1 LLAMAOP_MODEL="$model" LLAMAOP_MAX_BATCH=32 \
      LLAMAOP_CONTEXT_LENGTH=2048 timeout --signal=INT 420 "$py" hack/bench/serving.py --name "vllm-$model" \
      --health /health "${load[@]}" -- "$py" -m llama_runtime launch serve --host 127.0.0.1 || status=$?
  else
    echo "RESULT vllm-$model: skipped, vLLM is not installed for $py (carry its wheels to run it)"
  fi
fi
exit $status
