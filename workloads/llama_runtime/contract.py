"""The operator -> worker contract: every environment variable the operator sets on a worker.

This module is the one place the contract is written down. It imports nothing heavy (no torch),
so the operator's pure `workers` package renders pods from these names and the runtime reads
them back. Command-line flags of `python -m llama_runtime` override them.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "LLAMAOP_"

# Identity of the job and the pod (the pod values come from the downward API).
JOB_NAME: Final = "LLAMAOP_JOB_NAME"
JOB_NAMESPACE: Final = "LLAMAOP_JOB_NAMESPACE"
JOB_UID: Final = "LLAMAOP_JOB_UID"
POD_NAME: Final = "LLAMAOP_POD_NAME"
POD_NAMESPACE: Final = "LLAMAOP_POD_NAMESPACE"
ATTEMPT: Final = "LLAMAOP_ATTEMPT"  # 0 on first placement, +1 per retry or failover

# What to run.
MODE: Final = "LLAMAOP_MODE"  # train | inference
BACKEND: Final = "LLAMAOP_BACKEND"  # cpu | cuda | neuron | auto
MODEL: Final = "LLAMAOP_MODEL"  # preset name (tiny, llama3-1b, ...) or JSON of explicit dimensions
MODEL_DIR: Final = "LLAMAOP_MODEL_DIR"  # local dir with HF config/safetensors/tokenizer; optional
DATA_DIR: Final = "LLAMAOP_DATA_DIR"  # dir of .txt / .jsonl files; empty = shipped synthetic corpus
PRECISION: Final = "LLAMAOP_PRECISION"  # bf16 | fp32 (default: bf16 on cuda/neuron, fp32 on cpu)
SEED: Final = "LLAMAOP_SEED"

# Where it runs (read by `llama_runtime launch`, which counts the devices the container was given).
ACCELERATOR: Final = "LLAMAOP_ACCELERATOR"  # accelerator model (trainium1, h100, ...): the capability row
DEVICES: Final = "LLAMAOP_DEVICES"  # devices the placement gave the pod (cpu pools: worker slots)
CORES_PER_DEVICE: Final = "LLAMAOP_CORES_PER_DEVICE"  # NeuronCores per Neuron device (trn2: logical cores)
CPUS: Final = "LLAMAOP_CPUS"  # the pod's CPU request, whole cores (downward API): threads per process

# Training.
STEPS: Final = "LLAMAOP_STEPS"
SEQ_LEN: Final = "LLAMAOP_SEQ_LEN"
BATCH_SIZE: Final = "LLAMAOP_BATCH_SIZE"  # global batch in sequences per optimizer step
MICRO_BATCH: Final = "LLAMAOP_MICRO_BATCH"  # sequences per rank per forward; accumulation fills the rest
LEARNING_RATE: Final = "LLAMAOP_LEARNING_RATE"
CHECKPOINT_DIR: Final = "LLAMAOP_CHECKPOINT_DIR"
CHECKPOINT_EVERY: Final = "LLAMAOP_CHECKPOINT_EVERY"  # steps between checkpoints
ACTIVATION_CHECKPOINTING: Final = "LLAMAOP_ACTIVATION_CHECKPOINTING"  # "1" to enable
CHECKPOINT_KEEP: Final = "LLAMAOP_CHECKPOINT_KEEP"  # complete checkpoints kept (default 2)
WARMUP_STEPS: Final = "LLAMAOP_WARMUP_STEPS"  # linear LR warmup, then cosine decay to 10%
COMPILE: Final = "LLAMAOP_COMPILE"  # "1" to torch.compile the model (default on cuda, off on cpu)
# Steps of this process left out of the measured tokens/s (compilation, warm-up); default 1. A probe sets
# its warm-up steps here.
MEASURE_AFTER: Final = "LLAMAOP_MEASURE_AFTER"
# Set by the launcher, not the operator: when it started (Unix seconds), so start-up counts from there.
LAUNCHED_AT: Final = "LLAMAOP_LAUNCHED_AT"

# Inference.
PORT: Final = "LLAMAOP_PORT"
MAX_BATCH: Final = "LLAMAOP_MAX_BATCH"
MAX_NEW_TOKENS: Final = "LLAMAOP_MAX_NEW_TOKENS"
SERVED_MODEL_NAME: Final = "LLAMAOP_SERVED_MODEL_NAME"  # "model" in OpenAI responses (default: job name)
ENGINE: Final = "LLAMAOP_ENGINE"  # llama-runtime | vllm | nxd-inference (default: the capability table's)
CONTEXT_LENGTH: Final = "LLAMAOP_CONTEXT_LENGTH"  # longest prompt + completion (vLLM's --max-model-len)

# Observability.
METRICS_PORT: Final = "LLAMAOP_METRICS_PORT"  # Prometheus /metrics of a training rank 0
PROGRESS_ANNOTATION: Final = "llamaop.io/progress"  # JSON on the rank-0 pod; fields: PROGRESS_FIELDS
PROGRESS_INTERVAL: Final = "LLAMAOP_PROGRESS_INTERVAL"  # seconds between annotation patches
LOG_LEVEL: Final = "LLAMAOP_LOG_LEVEL"  # debug | info | warning | error

# The progress annotation's JSON (camelCase), all numbers for the whole job (every rank together):
PROGRESS_FIELDS: Final = {
    "step": "optimizer steps done",
    "totalSteps": "steps the run makes (LLAMAOP_STEPS)",
    "loss": "mean loss of the latest step",
    "tokensPerSecond": "tokens/s over the latest steps (this process's first step left out)",
    "etaSeconds": "seconds left at that rate",
    "startupSeconds": "from the launcher's start (LLAMAOP_LAUNCHED_AT) to the first step of this process",
    "warmupSteps": "this process's first steps, left out of the measured rate (LLAMAOP_MEASURE_AFTER)",
    "compileSeconds": "what the warm-up steps took beyond as many measured steps (compilation, warm-up)",
    "measuredSteps": "steps timed after the warm-up",
    "measuredTokensPerSecond": "tokens/s over the measured steps only: what a probe is placed by",
    "updated": "when rank 0 wrote it (UTC)",
}

# Neuron: where compiled graphs are cached between runs (a volume the operator mounts).
NEURON_COMPILE_CACHE: Final = "NEURON_COMPILE_CACHE_URL"

# Default ports.
DEFAULT_PORT: Final = 8000
DEFAULT_METRICS_PORT: Final = 9400
DEFAULT_RDZV_PORT: Final = 29500

ALL: Final = tuple(
    v
    for k, v in dict(globals()).items()
    if k.isupper() and k != "PREFIX" and isinstance(v, str) and v.startswith(PREFIX)
)
