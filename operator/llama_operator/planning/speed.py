"""The speed model: how fast a Llama trains or serves on an accelerator, from FLOPs and bytes.

Training: tokens/s per device = peak FLOP/s x MFU / FLOPs per token (x 6/8 with activation
checkpointing, which adds one forward pass), times the node scaling `node_retention ** log2(nodes)`.
Inference: one decode step of a replica reads its weights and the live KV cache and computes one token per
sequence; it takes the longer of the memory time (bytes / bandwidth x bandwidth efficiency) and the compute
time (FLOPs / peak x compute efficiency), over the replica's devices scaled by
`replica_retention ** log2(devices)`.

The efficiencies and retentions are the calibration's (catalog/calibration.yaml), fitted to the published
measurements in catalog/measurements.yaml by planning/calibration.py, keyed by accelerator, precision and
mode; a pool's learned factor (planning/learning.py) multiplies them. Model size enters only through FLOPs
and bytes, so a fit on one model transfers to another.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llama_operator.catalog import (
    Accelerator,
    Calibration,
    InferenceSpeed,
    SpeedPrecision,
    TrainingSpeed,
)

if TYPE_CHECKING:
    from llama_operator.planning.llama import LlamaShape

# Recomputing activations costs one more forward pass: 6 instead of 8 FLOPs per parameter and token.
CHECKPOINTING_SPEEDUP = 6.0 / 8.0
ELEMENT_BYTES: dict[SpeedPrecision, int] = {"fp8": 1, "bf16": 2, "fp32": 4}


@dataclass(frozen=True, slots=True)
class Arch:
    """The numbers of a model that FLOPs and bytes depend on."""

    parameters: float
    layers: int
    hidden: int
    kv_width: int

    @classmethod
    def of(cls, shape: LlamaShape) -> Arch:
        return cls(shape.parameters, shape.layers, shape.hidden, shape.kv_width)

    def training_flops_per_token(self, sequence_length: int) -> float:
        """Forward and backward: 6 per parameter plus attention scores (PaLM's 12 x layers x hidden x seq)."""
        return 6.0 * self.parameters + 12.0 * self.layers * self.hidden * sequence_length

    def decode_flops_per_token(self, attended: float) -> float:
        """One generated token attending over `attended` cached tokens."""
        return 2.0 * self.parameters + 4.0 * self.layers * self.hidden * attended

    def kv_bytes_per_token(self, precision: SpeedPrecision) -> float:
        return 2.0 * self.layers * self.kv_width * ELEMENT_BYTES[precision]

    def weight_bytes(self, precision: SpeedPrecision) -> float:
        return self.parameters * ELEMENT_BYTES[precision]


def doubling_scale(count: float, retention: float) -> float:
    """`retention` kept per doubling of `count` (1 for one node or device)."""
    return retention ** math.log2(count) if count > 1 else 1.0


def training_tokens_per_device(
    flops_per_token: float,
    device: Accelerator,
    precision: SpeedPrecision,
    speed: TrainingSpeed,
    *,
    activation_checkpointing: bool = False,
    factor: float = 1.0,
) -> float:
    """Tokens/s of one device on one node (node scaling is the caller's: see `node_scale`)."""
    peak = device.peak(precision) or device.peak_tflops
    rate = peak * 1e12 * speed.mfu * factor / flops_per_token
    return rate * (CHECKPOINTING_SPEEDUP if activation_checkpointing else 1.0)


def node_scale(nodes: int, retention: float, *, efa: bool, no_efa: float) -> float:
    """Per-device throughput kept by a job on `nodes` nodes: the calibration's retention per doubling,
    and for pools without EFA the catalog's assumption `no_efa`."""
    if nodes <= 1:
        return 1.0
    return doubling_scale(nodes, retention) * (1.0 if efa else no_efa)


def nodes_for(rate: float, node_rate: float, scale: Callable[[int], float]) -> int:
    """The fewest nodes whose scaled throughput reaches `rate` (each adds `node_rate` x scale(n))."""
    nodes = max(1, math.ceil(rate / node_rate))
    while nodes * node_rate * scale(nodes) < rate:
        if nodes > 1 and (nodes + 1) * scale(nodes + 1) <= nodes * scale(nodes):
            return nodes + 1_000_000  # more nodes no longer help: no node count meets the rate
        nodes += max(1, nodes // 64)
    return nodes


class Efficiencies(Protocol):
    """What a decode step reads of an InferenceSpeed (planning.estimate.Rates has the same attributes)."""

    @property
    def bandwidth_efficiency(self) -> float: ...

    @property
    def compute_efficiency(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One decode step of a replica."""

    seconds: float
    memory_bound: bool


def decode_step(
    *,
    bytes_read: float,
    flops: float,
    devices: float,
    device: Accelerator,
    precision: SpeedPrecision,
    speed: Efficiencies,
    replica_retention: float,
    factor: float = 1.0,
) -> Step:
    """A step that reads `bytes_read` and computes `flops`, spread over a replica's `devices`."""
    scale = devices * doubling_scale(devices, replica_retention) * factor
    memory = bytes_read / (scale * device.memory_bandwidth_tbs * 1e12 * speed.bandwidth_efficiency)
    peak = device.peak(precision) or device.peak_tflops
    compute = flops / (scale * peak * 1e12 * speed.compute_efficiency)
    return Step(max(memory, compute), memory >= compute)


def prefill_seconds(
    flops: float,
    *,
    devices: float,
    device: Accelerator,
    precision: SpeedPrecision,
    efficiency: float,
    replica_retention: float,
) -> float:
    """Computing prompts of `flops` over a replica's devices (compute only: the weights are read once for
    the whole prompt)."""
    scale = devices * doubling_scale(devices, replica_retention)
    peak = device.peak(precision) or device.peak_tflops
    return flops / (scale * peak * 1e12 * efficiency)


def training_speed(
    calibration: Calibration, accelerator: str, device: Accelerator, precision: SpeedPrecision
) -> TrainingSpeed:
    """The calibrated training efficiency of an accelerator at a precision. A precision the accelerator
    has no fit for takes its bf16 efficiency at that precision's peak (the stated conversion)."""
    speeds = calibration.speeds(accelerator, device.family).train
    return speeds.get(precision) or speeds["bf16"]


def inference_speed(
    calibration: Calibration, accelerator: str, device: Accelerator, precision: SpeedPrecision
) -> InferenceSpeed:
    """As `training_speed`, for serving."""
    speeds = calibration.speeds(accelerator, device.family).inference
    return speeds.get(precision) or speeds["bf16"]
