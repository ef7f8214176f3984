"""A LlamaJobSpec reduced to the numbers and sets the engine compares against pools (hashable, so
estimates can be cached per workload and pool type)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from llama_operator.api.fields import duration_seconds
from llama_operator.api.job import LlamaJobSpec
from llama_operator.api.types import FAMILIES, CapacityType, Family, Mode, Policy, Precision
from llama_operator.planning import llama
from llama_operator.planning.llama import LlamaShape


@dataclass(frozen=True, slots=True)
class Workload:
    mode: Mode
    shape: LlamaShape
    policy: Policy
    families: frozenset[Family]
    accelerators: frozenset[str]
    """Empty = any model of the accepted families."""
    capacity_types: frozenset[CapacityType]
    pools: frozenset[str]
    """Empty = any pool."""
    devices_per_node: int | None
    nodes: int | None
    max_price_per_hour: float | None
    max_cost: float | None
    deadline: datetime | None
    # training
    tokens: int = 0
    sequence_length: int = 0
    batch_size: int = 0
    micro_batch: int = 1
    precision: Precision = "bf16"
    activation_checkpointing: bool | None = None
    flops_per_token: float = 0.0
    # inference
    replicas: int = 0
    max_batch: int = 0
    context_length: int = 0
    weights_bytes: float = 0.0
    kv_bytes: float = 0.0
    """Weights and full KV cache of one replica as the model defines them (the speed model's bytes;
    what each rank holds depends on the pool's engine: llama.inference_rank_bytes)."""
    target_tokens_per_second: float | None = None
    min_tokens_per_second_per_sequence: float = 0.0

    def without_caps(self) -> Workload:
        """The same work with no price or cost cap (the engine applies those per pool)."""
        if self.max_price_per_hour is None and self.max_cost is None:
            return self
        return replace(self, max_price_per_hour=None, max_cost=None)

    def without_limits(self) -> Workload:
        """The same work with no price cap, cost cap or deadline (what the baselines see)."""
        return replace(self, max_price_per_hour=None, max_cost=None, deadline=None)

    def describe(self) -> str:
        if self.mode == "train":
            return f"{self.shape.label} training"
        return f"{self.shape.label} serving"


def deadline_of(spec: LlamaJobSpec, created: datetime | None) -> datetime | None:
    """placement.deadline, or creation time + placement.finishWithin."""
    placement = spec.placement
    if placement.deadline is not None or placement.finish_within is None or created is None:
        return placement.deadline
    return created + timedelta(seconds=duration_seconds(placement.finish_within))


def workload_of(spec: LlamaJobSpec, created: datetime | None = None) -> Workload:
    shape = llama.shape_of(spec.model)
    resources, placement = spec.resources, spec.placement
    families: frozenset[Family] = frozenset(
        FAMILIES if "any" in resources.families else (f for f in FAMILIES if f in resources.families)
    )
    base = Workload(
        mode=spec.mode,
        shape=shape,
        policy=placement.policy,
        families=families,
        accelerators=frozenset(resources.accelerators),
        capacity_types=frozenset(placement.capacity_types),
        pools=frozenset(placement.pools),
        devices_per_node=resources.devices_per_node,
        nodes=resources.nodes,
        max_price_per_hour=placement.max_price_per_hour,
        max_cost=placement.max_cost,
        deadline=deadline_of(spec, created),
    )
    if spec.mode == "train":
        if spec.training is None:
            raise ValueError("mode train needs spec.training")
        t = spec.training
        return replace(
            base,
            tokens=t.total_tokens(),
            sequence_length=t.sequence_length,
            batch_size=t.batch_size,
            micro_batch=t.micro_batch,
            precision=t.precision,
            activation_checkpointing=t.activation_checkpointing,
            flops_per_token=llama.training_flops_per_token(shape, t.sequence_length),
        )
    serve = spec.serving()
    weights, kv = llama.inference_replica_bytes(
        shape, max_batch=serve.max_batch, context_length=serve.context_length
    )
    return replace(
        base,
        replicas=serve.replicas,
        max_batch=serve.max_batch,
        context_length=serve.context_length,
        weights_bytes=weights,
        kv_bytes=kv,
        flops_per_token=llama.inference_flops_per_token(shape, serve.context_length),
        target_tokens_per_second=serve.target_tokens_per_second,
        min_tokens_per_second_per_sequence=serve.min_tokens_per_second_per_sequence,
    )
