"""What the runtime can execute: the one table the planner reads (the capability contract).

The planner must never offer a placement the runtime would refuse or run out of memory on. So the
runtime, which knows what it does, states it here per line (a backend as installed in an image) and
mode: how training state is sharded and over what, how many processes a pod runs, which precision it
really computes in, how attention and the loss hold memory, which engine serves with which
tensor-parallel degrees, and which accelerators train at all. The planner's memory model
(`llama_operator.planning.llama`) takes these rows as input; tests/unit/test_capabilities.py checks the
backends and the planner against them, and tests/runtime/test_memory.py checks the memory model against
what a real run holds.

Pure data and arithmetic, no torch import: the operator image reads it without the runtime's
dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Line = Literal["cpu", "cuda", "neuron-xla", "neuron-native"]
"""A backend as one image installs it. `neuron-xla` is torch-neuronx on torch-xla (the XLA line: torch
2.9, Neuron SDK 2.30, in maintenance); `neuron-native` is TorchNeuron, the PrivateUse1 `neuron` device
(SDK 2.33+, beta, Trn2/Trn3 only)."""
Mode = Literal["train", "inference"]
Sharding = Literal["full", "optimizer", "replicated"]
"""full: weights, gradients and optimizer state split over every shard holder (FSDP / ZeRO-3);
optimizer: only the optimizer state is (ZeRO-1); replicated: every holder keeps all of it."""
Processes = Literal["per-device", "per-core", "per-pod"]
"""torchrun processes in a pod: one per GPU (or CPU slot), one per NeuronCore, or one process that drives
all of the pod's devices."""
ShardUnit = Literal["process", "xla-device"]
"""What holds one shard of the training state and one micro batch: each torchrun process (FSDP2), or
each device of the XLA SPMD mesh a process drives (a NeuronCore; a virtual CPU device in tests)."""
Attention = Literal["fused", "materialized"]
"""fused: scaled_dot_product_attention with a flash/memory-efficient kernel keeps no seq x seq scores;
materialized: the scores of a layer ([batch, heads, seq, seq], fp32 softmax) are kept for backward."""
Engine = Literal["llama-runtime", "vllm", "nxd-inference"]

LOSS_CHUNK: Final = 1024
"""Sequence positions per chunk of the chunked cross-entropy (llama_runtime.loss): the logits the loss
holds at a time are micro_batch x min(seq, LOSS_CHUNK) x vocab."""


@dataclass(frozen=True, slots=True)
class Training:
    sharding: Sharding
    processes: Processes
    shard_unit: ShardUnit
    precisions: tuple[str, ...]
    """Precisions a job may ask for."""
    attention: Attention
    chunked_loss: bool
    """The loss never materialises the full logits of a micro batch (computed per LOSS_CHUNK positions)."""
    computes_in: str | None = None
    """The precision every job really trains in on this line, whatever it asks (None: the job's own)."""
    max_nodes: int | None = None
    """Most pods (nodes) one job may span; None: any."""
    max_nodes_why: str = ""
    tensor_parallel: tuple[int, ...] = (1,)
    """Degrees of tensor parallelism inside a rank group; (1,) = none."""

    def precision_for(self, requested: str) -> str:
        return self.computes_in or requested


@dataclass(frozen=True, slots=True)
class Serving:
    engine: Engine
    processes: Processes
    """How the engine spans a pod's devices; its tensor-parallel degree is that process count's width."""
    precisions: tuple[str, ...]
    """The first is the precision it serves in (the job does not choose one)."""
    pads_heads: bool = False
    """The engine pads attention heads up to a multiple of the degree and replicates KV heads to fit it
    (NxD Inference), so any degree runs, at the memory cost of the padding."""
    replicates_kv: bool = False
    """With more ranks than KV heads, each rank keeps a copy of one KV head (vLLM); otherwise the degree
    must divide the KV heads."""

    @property
    def precision(self) -> str:
        return self.precisions[0]


@dataclass(frozen=True, slots=True)
class Capability:
    line: Line
    training: Training | None
    """None: this line does not train on the accelerators it serves."""
    serving: Serving | None
    source: str
    """Where the claims come from (code path or documentation page)."""


CAPABILITIES: Final[dict[Line, Capability]] = {
    "cpu": Capability(
        "cpu",
        # lifecycle/workerplan.py runs CPU training in the backend default, fp32 (bf16 autocast is slow).
        Training("full", "per-pod", "process", ("fp32", "bf16"), "fused", True, computes_in="fp32"),
        Serving("llama-runtime", "per-device", ("fp32", "bf16"), replicates_kv=True),
        "llama_runtime.backends.base (FSDP2 over gloo, sdpa); llama_runtime.serve.tensor_parallel (fp32 "
        "by default; KV heads replicated past their count)",
    ),
    "cuda": Capability(
        "cuda",
        Training("full", "per-device", "process", ("bf16", "fp32"), "fused", True),
        Serving("vllm", "per-device", ("bf16",), replicates_kv=True),
        "llama_runtime.backends.base (FSDP2 over NCCL, sdpa flash); vLLM --tensor-parallel-size",
    ),
    "neuron-xla": Capability(
        "neuron-xla",
        # One SPMD process per pod, its mesh over the pod's NeuronCores; a multi-host SPMD mesh (every
        # host feeding its shard of the global batch, sharded checkpoints) is not implemented.
        Training(
            "full",
            "per-pod",
            "xla-device",
            ("bf16", "fp32"),
            "materialized",
            True,
            max_nodes=1,
            max_nodes_why="its SPMD mesh spans one pod; multi-host SPMD is not implemented",
        ),
        Serving("nxd-inference", "per-core", ("bf16",), pads_heads=True),
        "torch-xla SPMD FSDPv2 (llama_runtime.backends.xla; XLA lowers attention to matmuls, so the "
        "scores are materialised); NxD Inference tp_degree over NeuronCores "
        "(neuronx-distributed-inference modules/attention/gqa.py: get_shardable_head_counts)",
    ),
    "neuron-native": Capability(
        "neuron-native",
        # Whether TorchNeuron's sdpa keeps the scores is not documented: counted as materialised.
        Training("full", "per-core", "process", ("bf16", "fp32"), "materialized", True),
        Serving("nxd-inference", "per-core", ("bf16",), pads_heads=True),
        "TorchNeuron FSDP2 over NeuronCores (llama_runtime.backends.base; awsdocs-neuron torch/index: "
        "'Configure sharding based on NeuronCores'); NxD Inference tp_degree over NeuronCores",
    ),
}

# Which line runs on an accelerator model, where the family alone does not say. TorchNeuron supports
# Trn2 and Trn3 only (awsdocs-neuron release-notes/components/torchneuron); Trn1 and Inferentia2 stay
# on the XLA line.
NEURON_LINES: Final[dict[str, Line]] = {
    "trainium1": "neuron-xla",
    "inferentia2": "neuron-xla",
    "trainium2": "neuron-native",
}
# Accelerators a line serves on but does not train on (awsdocs-neuron pytorch-setup: "PyTorch NeuronX for
# training on Trn1 and Trn2", "for inference on Inf2, Trn1, and Trn2").
SERVE_ONLY: Final[frozenset[str]] = frozenset({"inferentia2"})
FAMILY_LINES: Final[dict[str, Line]] = {"nvidia": "cuda", "cpu": "cpu"}


def line_for(family: str, accelerator: str) -> Line:
    """The runtime line for an accelerator model of a family."""
    if family == "neuron":
        return NEURON_LINES.get(accelerator, "neuron-xla")
    return FAMILY_LINES[family]


def capability(family: str, accelerator: str) -> Capability:
    return CAPABILITIES[line_for(family, accelerator)]


def refusal(family: str, accelerator: str, mode: Mode, precision: str | None = None) -> str | None:
    """Why the runtime cannot run `mode` on `accelerator` at all, or None if it can."""
    cap = capability(family, accelerator)
    if mode == "train":
        if cap.training is None or accelerator in SERVE_ONLY:
            return f"{accelerator} does not train ({cap.line} serves only there)"
        if precision is not None and precision not in cap.training.precisions:
            return f"{cap.line} does not train in {precision}"
        return None
    if cap.serving is None:
        return f"{cap.line} does not serve"
    if precision is not None and precision not in cap.serving.precisions:
        return f"{cap.serving.engine} does not serve in {precision}"
    return None


def processes_per_pod(processes: Processes, devices: int, cores_per_device: int) -> int:
    """torchrun processes of a pod with `devices` devices of `cores_per_device` NeuronCores (0 off Neuron)."""
    if processes == "per-device":
        return devices
    if processes == "per-core":
        return devices * max(cores_per_device, 1)
    return 1


def shard_holders_per_pod(training: Training, devices: int, cores_per_device: int) -> int:
    """Holders of one shard of the training state (and one micro batch each) in a pod."""
    if training.shard_unit == "xla-device":
        return devices * max(cores_per_device, 1)
    return processes_per_pod(training.processes, devices, cores_per_device)


def tensor_parallel_degree(serving: Serving, devices: int, cores_per_device: int) -> int:
    """The degree one replica on `devices` devices runs at: the width of the engine's processes."""
    return processes_per_pod(serving.processes, devices, cores_per_device)


def shardable_heads(
    serving: Serving, degree: int, heads: int, kv_heads: int, intermediate: int | None = None
) -> tuple[int, int] | None:
    """(query heads, KV heads) the engine holds in all at `degree`, after padding or replicating; None if it
    cannot split the model that way."""
    if degree == 1:
        return heads, kv_heads
    if serving.pads_heads:
        # NxD Inference: query heads padded to a multiple of the degree; KV heads kept when the degree
        # divides them, replicated up to the degree when it is their multiple, else converted to MHA.
        padded = -(-heads // degree) * degree
        if heads == kv_heads:
            return padded, padded
        if kv_heads % degree == 0:
            return padded, kv_heads
        if degree % kv_heads == 0:
            return padded, degree
        return padded, padded
    if heads % degree or (intermediate is not None and intermediate % degree):
        return None
    if kv_heads % degree == 0:
        return heads, kv_heads
    if serving.replicates_kv and degree % kv_heads == 0:
        return heads, degree
    return None


def tensor_parallel_fits(
    serving: Serving, degree: int, heads: int, kv_heads: int, intermediate: int | None = None
) -> bool:
    """Whether the engine can split a model with these heads (and MLP width) `degree` ways."""
    return shardable_heads(serving, degree, heads, kv_heads, intermediate) is not None
