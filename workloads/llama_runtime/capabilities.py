"""What the runtime can execute: the one table the planner reads (the capability contract).

The planner must never offer a placement the runtime would refuse or run out of memory on. So the
runtime, which knows what it does, states it here per line (a backend as installed in an image) and
mode: how training state is sharded, how many processes a pod runs, which engine serves and with which
tensor-parallel degrees, and which precisions and accelerators work. The planner's memory and speed
models take these rows as input; tests check both the planner and the backends against them.

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
"""full: weights, gradients and optimizer state split over every rank (FSDP / ZeRO-3); optimizer: only
the optimizer state is (ZeRO-1); replicated: every rank holds all of it (data parallel)."""
Processes = Literal["per-device", "per-core", "per-pod"]
"""torchrun processes in a pod: one per GPU, one per NeuronCore, or one driving all of the pod's devices."""
Engine = Literal["llama-runtime", "vllm", "nxd-inference"]


@dataclass(frozen=True, slots=True)
class Training:
    sharding: Sharding
    processes: Processes
    precisions: tuple[str, ...]
    chunked_loss: bool
    """The loss never materialises the full fp32 logits of a micro batch (computed per sequence chunk)."""
    tensor_parallel: tuple[int, ...] = (1,)
    """Degrees of tensor parallelism inside a rank group; (1,) = none."""


@dataclass(frozen=True, slots=True)
class Serving:
    engine: Engine
    processes: Processes
    """How the engine spans a pod's devices; its tensor-parallel degree is that process count's width."""
    precisions: tuple[str, ...]
    pads_heads: bool = False
    """The engine pads attention heads up to a multiple of the degree (NxD Inference), so the degree
    need not divide them; otherwise it must divide the query heads, and the KV heads must divide or be
    divided by it (KV heads are replicated when the degree exceeds them)."""


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
        Training("full", "per-pod", ("fp32", "bf16"), chunked_loss=True),
        Serving("llama-runtime", "per-device", ("fp32", "bf16")),
        "llama_runtime.backends.base (FSDP2 over gloo); llama_runtime.serve (tensor parallel over gloo)",
    ),
    "cuda": Capability(
        "cuda",
        Training("full", "per-device", ("bf16", "fp32"), chunked_loss=True),
        Serving("vllm", "per-device", ("bf16",)),
        "llama_runtime.backends.base (FSDP2 over NCCL); vLLM --tensor-parallel-size",
    ),
    "neuron-xla": Capability(
        "neuron-xla",
        Training("full", "per-pod", ("bf16", "fp32"), chunked_loss=True),
        Serving("nxd-inference", "per-core", ("bf16",), pads_heads=True),
        "torch-xla SPMD FSDPv2 (llama_runtime.backends.xla); NxD Inference tp_degree over NeuronCores",
    ),
    "neuron-native": Capability(
        "neuron-native",
        Training("full", "per-core", ("bf16", "fp32"), chunked_loss=True),
        Serving("nxd-inference", "per-core", ("bf16",), pads_heads=True),
        "TorchNeuron FSDP2 (llama_runtime.backends.base); NxD Inference tp_degree over NeuronCores",
    ),
}

# Which line runs on an accelerator model, where the family alone does not say. TorchNeuron supports
# Trn2 and Trn3 only; Trn1 and Inferentia2 stay on the XLA line.
NEURON_LINES: Final[dict[str, Line]] = {
    "trainium1": "neuron-xla",
    "inferentia2": "neuron-xla",
    "trainium2": "neuron-native",
}
# Accelerators a line runs on but does not train on (Neuron docs: Inf2 is an inference instance;
# torch-neuronx training targets Trn1/Trn2).
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


def tensor_parallel_fits(serving: Serving, degree: int, heads: int, kv_heads: int) -> bool:
    """Whether the engine can split a model with these heads `degree` ways."""
    if degree == 1 or serving.pads_heads:
        return True
    return heads % degree == 0 and (kv_heads % degree == 0 or degree % kv_heads == 0)
