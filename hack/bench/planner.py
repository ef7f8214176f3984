"""Planner benchmark (`make bench`): decision CPU on a big queue, and true cost against an oracle.

1. Latency: 10,000 queued jobs against 100 pools, decided by the engine and by first-fit on the same queue
   and inventory in the same process; CPU per decision p50/p99 of each and their ratios (target: engine
   p99 under 5 ms).
2. Cost: the shipped trace replayed against the shipped truth (traces/truth-seed1.yaml) and two more seeded
   truths: real speeds that differ from the calibrated estimate by up to 2x either way. Per policy, with
   learning off and on: true cost, deadline, cost-cap and service-level misses, and regret (true cost
   over the oracle's, which plans with the truth). The shipped truth also runs with 8x the nodes.
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

from rich.console import Console

from llama_operator import cli
from llama_operator.api import POOL_LABEL, AcceleratorPoolSpec, LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import (
    Inventory,
    JobRequest,
    NodeState,
    Planner,
    PoolState,
    Ranking,
    order,
    simulator,
    trace,
    tracegen,
    truth,
)

TRACE = Path(__file__).parent / "traces" / "mixed-400-seed7.yaml"
TRUTH = Path(__file__).parent / "traces" / "truth-seed1.yaml"
SEEDED_TRUTHS = (2, 3)


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


def _decide_all(
    inventory: Inventory, queue: list[JobRequest], now: datetime, ranking: Ranking
) -> list[float]:
    """CPU milliseconds per decision over the whole queue."""
    gc.collect()
    gc.freeze()  # the setup's objects are long-lived, as an operator's would be; keep them out of GC scans
    planner = Planner(inventory, now=now, ranking=ranking)
    cpu = []
    for job in queue:
        c0 = time.thread_time()
        planner.decide(job)
        cpu.append((time.thread_time() - c0) * 1000.0)
    gc.unfreeze()
    return cpu


def latency(jobs: int, pools: int, seed: int) -> None:
    rng = random.Random(seed)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    inventory = big_inventory(rng, pools)
    queue = order(big_queue(rng, jobs, now))
    runs = {ranking: _decide_all(inventory, queue, now, ranking) for ranking in ("first-fit", "policy")}
    print(f"decision CPU, {jobs} queued jobs x {pools} pools, same queue and inventory, one process:")
    quantiles = {}
    for ranking, cpu in runs.items():
        q = statistics.quantiles(cpu, n=100)
        quantiles[ranking] = (q[49], q[98], sum(cpu))
        name = "engine" if ranking == "policy" else ranking
        total = sum(cpu) / 1000
        print(
            f"  {name:<10} p50 {q[49]:.2f} ms  p99 {q[98]:.2f} ms  max {max(cpu):.2f} ms  total {total:.1f} s"
        )
    (e50, e99, et), (f50, f99, ft) = quantiles["policy"], quantiles["first-fit"]
    print(f"  engine / first-fit: p50 {e50 / f50:.2f}x  p99 {e99 / f99:.2f}x  total {et / ft:.2f}x")


def costs(path: Path, truth_path: Path, seeds: tuple[int, ...], loose_factor: int) -> None:
    shipped = trace.load(path)
    models = {j.spec.model.preset or "custom" for j in shipped.jobs}
    console = Console(width=200)
    runs = [(shipped, truth.load(truth_path), "tight")]
    runs += [(shipped, truth.generate(builtin().accelerators, models, seed=s), "tight") for s in seeds]
    runs.append((shipped.scaled(loose_factor), runs[0][1], f"loose x{loose_factor}"))
    for t, real, capacity in runs:
        c = simulator.compare(t, truth=real)
        console.print(
            cli.comparison_table(
                c, f"trace {t.name} ({len(t.jobs)} jobs), truth {real.name}, capacity {capacity}"
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--truth", type=Path, default=TRUTH)
    parser.add_argument("--loose", type=int, default=8, help="node multiplier for the loose-capacity run")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    if not args.skip_latency:
        latency(args.jobs, args.pools, args.seed)
    costs(args.trace, args.truth, SEEDED_TRUTHS, args.loose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
