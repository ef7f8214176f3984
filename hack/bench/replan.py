"""Replanning at scale: the operator's reconcile pass with 10,000 queued jobs on 1,000 nodes, in-process.

Builds the operator's loop (controller/state.py) over in-memory indexes: the nodes of hack/cluster/pools.yaml
(scaled), the example pools, and jobs of the benchmark mix until the cluster is full and `--queued` wait.
The loop's own writes go to those indexes, as the watches would show them back; no API server is
involved, so this times the operator's decisions alone. It then times passes:

  full             every job through the state machine and every queued job through the planner (what
                   each pass did before passes were scoped to changes; the periodic safety pass does it)
  no change        nothing happened since the last pass
  one job changed  one queued job's spec changed
  one node freed   one running job finished, so its node has room again

and prints each pass's CPU time (median of --repeat passes) and its ratio to the full pass on the same state.

Usage: .venv/bin/python hack/bench/replan.py [--queued 10000] [--nodes 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mix import example_pools, job_spec, node_bodies

from llama_operator.controller import logs
from llama_operator.controller.kube import Kube
from llama_operator.controller.main import build_options
from llama_operator.controller.podwatch import PodWatch
from llama_operator.controller.state import Indexes, Loop
from llama_operator.lifecycle.views import job_view, node_view
from llama_operator.planning import plan

NAMESPACE = "bench"
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """A JSON merge patch (RFC 7386), as the API server applies the operator's status patches."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


class MemoryCluster:
    """The indexes the operator's watches keep, and the writes it makes, in memory: kopf's (nodes, jobs,
    pools) and the loop's own pod watch, fed the events an API server would send. A created pod is bound
    to the node its affinity names and runs at once (what kube-scheduler and kwok do)."""

    def __init__(self, scale: int, podwatch: PodWatch) -> None:
        nodes = [node_view(b) for b in node_bodies(scale)]
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.podwatch = podwatch
        self.indexes = Indexes(
            nodes={n.name: [n] for n in nodes},
            jobs={},
            pools={p.metadata.name: [p] for p in example_pools()},
        )
        podwatch.synced = True
        self.writes = 0

    def add_job(self, i: int) -> None:
        name = f"bench-{i:05d}"
        body = {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"uid-{i}",
                "generation": 1,
                "creationTimestamp": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": job_spec(i),
            "status": {},
        }
        self.jobs[name] = body
        self.indexes.jobs[f"{NAMESPACE}/{name}"] = [job_view(body)]

    def change_spec(self, name: str) -> None:
        body = self.jobs[name]
        body["metadata"]["generation"] += 1
        body["spec"]["priority"] = (body["spec"].get("priority", 0) + 1) % 5
        self.indexes.jobs[f"{NAMESPACE}/{name}"] = [job_view(body)]

    def finish(self, key: str) -> None:
        """The job's pods exit 0 (its status follows in the next pass, as the operator writes it)."""
        for name, body in list(self.pods.items()):
            if body["metadata"]["labels"].get("llamaop.io/job") == key.partition("/")[2]:
                body["status"] = {"phase": "Succeeded"}
                self.podwatch.apply("MODIFIED", body)
                del self.pods[name]

    # The Kube methods the loop calls.
    async def create(self, manifest: Mapping[str, Any]) -> bool:
        self.writes += 1
        if manifest["kind"] != "Pod":
            return True
        name = manifest["metadata"]["name"]
        body = {**manifest, "status": {"phase": "Running"}}
        body["metadata"] = {**manifest["metadata"], "uid": f"pod-{name}"}
        terms = manifest["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        body["spec"] = {
            **manifest["spec"],
            "nodeName": terms["nodeSelectorTerms"][0]["matchFields"][0]["values"][0],
        }
        self.pods[name] = body
        self.podwatch.apply("ADDED", body)
        return True

    async def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        self.writes += 1
        body = self.jobs.get(name)
        if body is None:
            return False
        merge(body.setdefault("status", {}), status)
        self.indexes.jobs[f"{namespace}/{name}"] = [job_view(body)]
        return True

    async def patch_pool_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.writes += 1

    async def delete_collection(self, kind: str, namespace: str, selector: str) -> None:
        self.writes += 1

    async def close(self) -> None:
        return None


async def settle(loop: Loop, cluster: MemoryCluster, limit: int = 20) -> int:
    """Run passes until one writes nothing; returns how many ran."""
    for i in range(1, limit + 1):
        before = cluster.writes
        await loop.pass_once()
        await loop.drain()
        if cluster.writes == before and not loop.written:
            return i
    raise SystemExit(f"the loop did not settle in {limit} passes")


async def timed(loop: Loop) -> float:
    """CPU seconds of one pass (this process's only thread: the machine may be shared, its wall clock
    stretched by whatever else runs)."""
    gc.collect()
    t0 = time.thread_time()
    await loop.pass_once()
    elapsed = time.thread_time() - t0
    await loop.drain()
    return elapsed


def phases(cluster: MemoryCluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for views in cluster.indexes.jobs.values():
        phase = str(views[0].status.phase or "new")
        out[phase] = out.get(phase, 0) + 1
    return out


async def run(args: argparse.Namespace) -> None:
    logs.configure("WARNING", json=False)
    scale = max(1, -(-args.nodes // 22))
    options = build_options(argparse.Namespace(cost_refresh=3600))
    loop = Loop()
    cluster = MemoryCluster(scale, loop.podwatch)
    loop.configure(
        cast(Kube, cluster), options, lambda jobs, inv, now: plan(jobs, inv, now=now, catalog=options.catalog)
    )
    loop.pool_every = float("inf")  # pool status refreshes are periodic, not part of a pass
    loop.prepare()
    loop.attach(cluster.indexes)

    t = time.perf_counter()
    added = 0
    while True:  # fill the cluster, then queue `--queued` jobs behind it
        queued = phases(cluster).get("Queued", 0)
        if queued >= args.queued:
            break
        more = args.queued - queued if added else args.queued + 2 * len(cluster.indexes.nodes)
        for i in range(added, added + more):
            cluster.add_job(i)
        added += more
        loop.changes.full_every = timedelta(0)
        await settle(loop, cluster)
    nodes = len(cluster.indexes.nodes)
    print(f"setup: {nodes} nodes, {added} jobs {phases(cluster)} in {time.perf_counter() - t:.0f}s")

    def median(samples: list[float]) -> float:
        return statistics.median(samples)

    loop.changes.full_every = timedelta(0)
    full = median([await timed(loop) for _ in range(args.repeat)])
    loop.changes.full_every = timedelta(hours=1)
    await timed(loop)  # the full pass that starts the tracker's interval
    results: dict[str, list[float]] = {"no change": [], "one job changed": [], "one node freed": []}
    queued_names = sorted(n for n, b in cluster.jobs.items() if b.get("status", {}).get("phase") == "Queued")
    running = sorted(k for k, v in cluster.indexes.jobs.items() if v[0].status.phase == "Running")
    if args.profile:  # where a no-change pass spends its time
        profiler = cProfile.Profile()
        profiler.enable()
        await timed(loop)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    for r in range(args.repeat):
        results["no change"].append(await timed(loop))
        cluster.change_spec(queued_names[r])
        results["one job changed"].append(await timed(loop))
        await settle(loop, cluster)
        before = phases(cluster)
        cluster.finish(running[r])  # the pass ends the job and replans what waits for its node
        results["one node freed"].append(await timed(loop))
        await settle(loop, cluster)
        after = phases(cluster)
        if r == 0:
            print(f"  one node freed: {before} -> {after}")
    print(f"full pass: {1000 * full:.1f} ms CPU ({phases(cluster).get('Queued', 0)} queued, {nodes} nodes)")
    for label, samples in results.items():
        ms = 1000 * median(samples)
        print(f"{label:16s} {ms:8.1f} ms CPU  ratio to a full pass {ms / (1000 * full):.4f}")
    limit = 0.1
    verdict = "meets" if median(results["no change"]) <= limit else "misses"
    print(f"no-change pass {1000 * median(results['no change']):.1f} ms {verdict} the 100 ms target")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument(
        "--nodes", type=int, default=1000, help="rounded up to whole copies of the 22-node pools"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a profile of one no-change pass")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
