"""A seeded synthetic job trace over the example pools, for the simulator and the benchmark."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from llama_operator.api.job import LlamaJobSpec
from llama_operator.api.pool import AcceleratorPoolSpec
from llama_operator.api.types import POOL_LABEL, CapacityType
from llama_operator.planning.simulator import soonest_hours
from llama_operator.planning.trace import Trace, TraceJob, TracePool

# The example pools (examples/pools) and how many nodes each has in the shipped trace.
DEFAULT_POOLS: tuple[tuple[str, str, CapacityType, float | None, int], ...] = (
    # name, instance type, capacity type, price per node-hour (None = catalog), nodes
    ("trn1-32xl-od", "trn1.32xlarge", "on-demand", None, 4),
    ("trn2-48xl-cb", "trn2.48xlarge", "reserved", 36.00, 2),
    ("inf2-48xl-od", "inf2.48xlarge", "on-demand", None, 3),
    ("p5-48xl-spot", "p5.48xlarge", "spot", 22.02, 2),
    ("p4d-24xl-od", "p4d.24xlarge", "on-demand", None, 3),
    ("g5-12xl-spot", "g5.12xlarge", "spot", 2.27, 6),
    ("g6e-48xl-od", "g6e.48xlarge", "on-demand", None, 2),
    ("cpu-m7i-od", "m7i.8xlarge", "on-demand", None, 6),
)


def default_pools() -> tuple[TracePool, ...]:
    return tuple(
        TracePool(
            name,
            nodes,
            AcceleratorPoolSpec(
                node_selector={POOL_LABEL: name},
                instance_type=itype,
                capacity_type=capacity,
                price_per_node_hour=price,
            ),
        )
        for name, itype, capacity, price, nodes in DEFAULT_POOLS
    )


def _training(preset: str, tokens: int, seq: int, batch: int) -> dict[str, Any]:
    return {
        "mode": "train",
        "model": {"preset": preset},
        "training": {"tokens": tokens, "sequenceLength": seq, "batchSize": batch},
    }


def job_spec(rng: random.Random) -> tuple[dict[str, Any], float]:
    """One synthetic job: (spec, serving hours). Mix of small CPU-sized runs, fine-tunes, pretraining and
    serving, as a platform team's week might look."""
    kind = rng.choices(
        ["tiny", "ft1b", "ft8b", "pre1b", "ft70b", "serve8b", "serve70b", "serve1b"],
        weights=[25, 20, 18, 6, 4, 12, 6, 9],
    )[0]
    hours = 0.0
    if kind == "tiny":
        spec = _training("tiny", rng.randint(1, 8) * 409_600, 256, 8)
    elif kind == "ft1b":
        spec = _training("llama3-1b", rng.randint(20, 400) * 1_000_000, 2048, 64)
    elif kind == "ft8b":
        spec = _training("llama3-8b", rng.randint(20, 300) * 1_000_000, 2048, 64)
    elif kind == "pre1b":
        spec = _training("llama3-1b", rng.randint(2, 12) * 1_000_000_000, 2048, 256)
    elif kind == "ft70b":
        spec = _training("llama3-70b", rng.randint(10, 60) * 1_000_000, 2048, 256)
    else:
        preset = {"serve8b": "llama3-8b", "serve70b": "llama3-70b", "serve1b": "llama3-1b"}[kind]
        spec = {
            "mode": "inference",
            "model": {"preset": preset},
            "inference": {"replicas": rng.randint(1, 2), "maxBatch": rng.choice([8, 16, 32])},
        }
        hours = rng.uniform(2.0, 24.0)
    roll = rng.random()
    if roll < 0.10:
        spec["resources"] = {"families": ["neuron"]}
    elif roll < 0.18:
        spec["resources"] = {"families": ["nvidia"]}
    if rng.random() < 0.15:
        spec["placement"] = {"capacityTypes": ["on-demand", "reserved"]}
    return spec, hours


def generate(
    *,
    seed: int = 7,
    jobs: int = 300,
    days: float = 7.0,
    start: datetime | None = None,
    name: str | None = None,
) -> Trace:
    """A reproducible synthetic trace over the default pools. Deadlines are set from the soonest finish on
    an empty cluster (1.5 to 4 times it) so that every deadline can be met by a good enough scheduler."""
    rng = random.Random(seed)
    start = start or datetime(2026, 6, 1, tzinfo=UTC)
    pools = default_pools()
    rate = jobs / (days * 24.0)
    arrival = 0.0
    out: list[TraceJob] = []
    for i in range(jobs):
        arrival += rng.expovariate(rate)
        raw, hours = job_spec(rng)
        spec = LlamaJobSpec.model_validate(raw)
        priority = rng.choice([0, 0, 0, 0, 10, 100])
        if spec.mode == "train" and rng.random() < 0.35:
            soonest = soonest_hours(spec, pools, now=start + timedelta(hours=arrival))
            if soonest is not None:
                deadline = start + timedelta(hours=arrival + soonest * rng.uniform(1.5, 4.0))
                raw.setdefault("placement", {})["deadline"] = deadline.isoformat().replace("+00:00", "Z")
                spec = LlamaJobSpec.model_validate(raw)
        out.append(TraceJob(f"job-{i:04d}", arrival, spec, hours=hours, priority=priority))
    return Trace(name or f"synthetic-seed{seed}-{jobs}jobs", start, pools, tuple(out))
