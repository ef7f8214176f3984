"""Learning from finished jobs: a measured speed corrects the calibrated efficiency of its pool.

A finished job's measured tokens/s is divided by what the calibrated speed model (planning/speed.py)
predicts for exactly that job (model, sequence length, precision, nodes, devices, activation
checkpointing) on its pool. The ratio updates one factor per pool, mode and precision: the geometric
mean of the ratios, with the calibration counted as PRIOR_RUNS runs at ratio 1. The factor multiplies the
calibrated efficiency, which enters every estimate through FLOPs and bytes, so what llama3-8b taught on a
trn1 pool also moves the estimate of llama3-3b there, and of another node count. Inference runs only
teach the inference factor and training runs only the training factor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from llama_operator.api.pool import AcceleratorPoolSpec, LearnedSpeed
from llama_operator.api.types import Mode, Precision
from llama_operator.catalog import Calibration, Catalog
from llama_operator.planning import speed
from llama_operator.planning.llama import KV_TRAFFIC
from llama_operator.planning.pools import PoolType, resolve_pool

PRIOR_RUNS = 1.0
"""The calibration weighs as much as one finished job: one run moves the factor halfway (in log)."""
# A ratio this far from the calibration is a broken run (a stalled job, a bad progress report), not speed.
PLAUSIBLE = (0.05, 20.0)

Key = tuple[Mode, Precision]


@dataclass(frozen=True, slots=True)
class Sample:
    """What one finished job measured, with the facts the speed model needs to predict it."""

    mode: Mode
    precision: Precision
    tokens_per_second: float
    """Whole job: all nodes (training) or all replicas (inference)."""
    arch: speed.Arch
    devices_per_node: int
    nodes: int
    """Training nodes, or inference replicas."""
    sequence_length: int = 0
    activation_checkpointing: bool = False
    max_batch: int = 0
    context_length: int = 0

    @property
    def key(self) -> Key:
        return (self.mode, self.precision)


def predicted(sample: Sample, pool: PoolType, calibration: Calibration, no_efa: float) -> float:
    """The calibrated tokens/s of the sample's job on the pool, before anything was learned."""
    device, arch = pool.device, sample.arch
    if sample.mode == "train":
        fitted = speed.training_speed(calibration, pool.accelerator, device, sample.precision)
        per_device = speed.training_tokens_per_device(
            arch.training_flops_per_token(sample.sequence_length),
            device,
            sample.precision,
            fitted,
            activation_checkpointing=sample.activation_checkpointing,
        )
        scale = speed.node_scale(
            sample.nodes, calibration.node_retention, efa=bool(pool.efa_per_node), no_efa=no_efa
        )
        return per_device * sample.devices_per_node * sample.nodes * scale
    fitted_inference = speed.inference_speed(calibration, pool.accelerator, device, sample.precision)
    kv = sample.max_batch * sample.context_length * arch.kv_bytes_per_token(sample.precision)
    step = speed.decode_step(
        bytes_read=arch.weight_bytes(sample.precision) + KV_TRAFFIC * kv,
        flops=sample.max_batch * arch.decode_flops_per_token(KV_TRAFFIC * sample.context_length),
        devices=sample.devices_per_node,
        device=device,
        precision=sample.precision,
        speed=fitted_inference,
        replica_retention=calibration.replica_retention,
    )
    return sample.nodes * sample.max_batch / step.seconds


def update(old: LearnedSpeed | None, ratio: float, key: Key, now: datetime | None) -> LearnedSpeed:
    """`old` with one more run at `ratio` (measured / calibrated)."""
    runs = old.runs if old is not None else 0
    log_factor = math.log(old.factor) if old is not None else 0.0
    weight = PRIOR_RUNS + runs
    factor = math.exp((log_factor * weight + math.log(ratio)) / (weight + 1.0))
    return LearnedSpeed(mode=key[0], precision=key[1], factor=round(factor, 6), runs=runs + 1, last_run=now)


def record(
    learned: Sequence[LearnedSpeed],
    sample: Sample,
    pool_spec: AcceleratorPoolSpec,
    catalog: Catalog,
    calibration: Calibration,
    now: datetime | None = None,
) -> list[LearnedSpeed] | None:
    """The pool's learned speeds after `sample`, or None when the sample teaches nothing (an invalid
    pool, nothing measured, or an implausible ratio)."""
    try:
        pool = resolve_pool(pool_spec, catalog)
    except ValueError:
        return None
    if sample.tokens_per_second <= 0 or sample.nodes < 1 or sample.devices_per_node < 1:
        return None
    expected = predicted(sample, pool, calibration, catalog.defaults.multi_node_efficiency_no_efa)
    ratio = sample.tokens_per_second / expected
    if not PLAUSIBLE[0] <= ratio <= PLAUSIBLE[1]:
        return None
    old = next((e for e in learned if (e.mode, e.precision) == sample.key), None)
    new = update(old, ratio, sample.key, now)
    return [new if (e.mode, e.precision) == sample.key else e for e in learned] + ([] if old else [new])


def factors(learned: Iterable[LearnedSpeed]) -> Mapping[Key, float]:
    """What the engine multiplies the calibration by, per mode and precision (PoolState.learned)."""
    return {(e.mode, e.precision): e.factor for e in learned}
