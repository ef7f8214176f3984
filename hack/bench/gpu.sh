#!/usr/bin/env bash
# Training tokens/s and MFU of one llama3-1b step on one GPU, eager and compiled (about 3-5 minutes).
# For a one-GPU machine that has torch + transformers + safetensors + numpy + prometheus-client
# installed (the project's `runtime` extra); it installs nothing and needs no network. Extra
# arguments go to hack/bench/runtime_gpu.py (e.g. --batch 32 --micro 8, --modes compiled).
# Usage: hack/bench/gpu.sh [ARGS]      PYTHON=/path/to/python hack/bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# Per-run budget under the 8-minute target; a hung compile cannot eat the whole lease.
timeout --signal=INT 420 "$py" hack/bench/runtime_gpu.py "$@"
