"""Planner benchmark (`make bench`): decision latency on a big queue, and cost on the shipped trace.

1. Latency: 10,000 queued jobs against 100 pools; every decision is timed, p50/p99 printed
   (target: p99 under 5 ms).
2. Cost: the shipped trace replayed by the simulator for the engine and both baselines, at the trace's
   capacity and with 8x the nodes ("loose"); ratios of total cost on the jobs all three completed
   (targets: at most 0.80 of first-fit; within 1.05 of the uncapacitated lower bound when loose; no more
   deadline misses than either baseline).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llama_operator.api import POOL_LABEL, AcceleratorPoolSpec, LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import (
    Inventory,
    JobRequest,
    NodeState,
    Planner,
    PoolState,
    order,
    simulator,
    trace,
    tracegen,
)

TRACE = Path(__file__).parent / "traces" / "mixed-400-seed7.yaml"


def big_inventory(rng: random.Random, pools: int) -> Inventory:
    """`pools` pools cycling over the catalog's priced instance types and capacity types, 2 to 8 nodes
    each, some devices already in use."""
    catalog = builtin()
    types = [name for name, t in catalog.instance_types.items() if t.price is not None]
    states = []
    for i in range(pools):
        itype = types[i % len(types)]
        capacity = ("on-demand", "spot", "reserved")[(i // len(types)) % 3]
        price = catalog.instance_types[itype].price * (
            0.4 if capacity == "spot" else 0.7 if capacity == "reserved" else 1
        )
        name = f"pool-{i:03d}"
        spec = AcceleratorPoolSpec(
            node_selector={POOL_LABEL: name},
            instance_type=itype,
            capacity_type=capacity,
            price_per_node_hour=price,
        )
        devices = catalog.instance_types[itype].devices
        nodes = tuple(
            NodeState(f"{name}-{n}", name, allocatable_devices=devices, used_devices=rng.randint(0, devices))
            for n in range(rng.randint(2, 8))
        )
        states.append(PoolState(name, spec, nodes))
    return Inventory(tuple(states))


def big_queue(rng: random.Random, jobs: int, now: datetime) -> list[JobRequest]:
    out = []
    for i in range(jobs):
        raw, _ = tracegen.job_spec(rng)
        if raw["mode"] == "train" and rng.random() < 0.3:
            raw.setdefault("placement", {})["deadline"] = (
                now + timedelta(hours=rng.uniform(2, 200))
            ).isoformat()
        created = now - timedelta(seconds=rng.uniform(0, 86400))
        out.append(
            JobRequest(f"ns/job-{i:05d}", LlamaJobSpec.model_validate(raw), created, rng.choice([0, 0, 10]))
        )
    return out


def latency(jobs: int, pools: int, seed: int) -> None:
    rng = random.Random(seed)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    inventory = big_inventory(rng, pools)
    queue = order(big_queue(rng, jobs, now))
    gc.collect()
    gc.freeze()  # the setup's objects are long-lived, as an operator's would be; keep them out of GC scans
    planner = Planner(inventory, now=now)
    wall, cpu, outcomes = [], [], {"placed": 0, "queued": 0, "rejected": 0}
    for job in queue:
        w0, c0 = time.perf_counter(), time.thread_time()
        decision = planner.decide(job)
        cpu.append((time.thread_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
        outcomes[decision.outcome] += 1
    gc.unfreeze()
    print(f"decision latency, {jobs} queued jobs x {pools} pools ({outcomes}):")
    for label, times in (("wall", wall), ("cpu ", cpu)):
        q = statistics.quantiles(times, n=100)
        print(
            f"  {label} p50 {q[49]:.2f} ms  p99 {q[98]:.2f} ms  max {max(times):.2f} ms"
            f"  total {sum(times) / 1000:.1f} s"
        )


def costs(path: Path, loose_factor: int) -> None:
    shipped = trace.load(path)
    for label, t in (("tight", shipped), (f"loose x{loose_factor}", shipped.scaled(loose_factor))):
        c = simulator.compare(t)
        print(f"trace {t.name} ({len(t.jobs)} jobs), capacity {label}:")
        for r in c.results.values():
            s = r.summary()
            print(
                f"  {s['ranking']:<22} cost ${s['totalCost']:>10,.2f}  done {s['completed']:>3}  "
                f"rejected {s['rejected']:>2}  deadline misses {s['deadlineMisses']:>3}/{s['deadlineJobs']}  "
                f"mean queue {s['meanQueueHours']:.2f} h  utilisation {s['utilisation']:.1%}"
            )
        print(
            "  engine cost / other, on the jobs all completed: "
            + ", ".join(f"{k} {v:.3f}" for k, v in c.ratios().items())
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--loose", type=int, default=8, help="node multiplier for the loose-capacity run")
    args = parser.parse_args()
    latency(args.jobs, args.pools, args.seed)
    costs(args.trace, args.loose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
