"""Operator at scale: 1,000 LlamaJobs applied at once to a cluster of 500+ fake nodes in 8 pools.

Prints seconds until every job is placed and Running, the operator's peak RSS and CPU seconds, and the
Kubernetes API requests it made per job. Runs on its own local cluster (`llamaop-bench`), removed after.
Nothing is asserted: these are numbers to compare between runs on the same machine.

Usage: .venv/bin/python hack/bench/operator.py [--jobs 1000] [--scale 24] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kube import Kubectl, llamajob_manifest, wait_for  # noqa: E402
from tests.operator_harness import Operator, install_api  # noqa: E402

CLUSTER = "llamaop-bench"
# A mix a platform team might submit: small fine-tunes and evals of several sizes, a few servers.
SHAPES = [
    {"families": ["any"], "devicesPerNode": 1},
    {"families": ["nvidia"], "devicesPerNode": 1},
    {"families": ["neuron"], "devicesPerNode": 1},
    {"families": ["nvidia"], "devicesPerNode": 4},
    {"families": ["neuron"], "devicesPerNode": 4},
    {"families": ["cpu"]},
    {"families": ["any"], "devicesPerNode": 8},
    {"families": ["neuron"], "devicesPerNode": 16},
]


def job(i: int) -> dict[str, Any]:
    shape = SHAPES[i % len(SHAPES)]
    return llamajob_manifest(
        f"bench-{i:04d}",
        {
            "mode": "train",
            "model": {"preset": "tiny" if i % 3 else "llama3-1b"},
            "training": {"steps": 1000, "sequenceLength": 1024, "batchSize": 64},
            "resources": shape,
            "priority": i % 5,
        },
    )


def cluster(*args: str, scale: int = 1) -> str:
    env = {**os.environ, "LLAMAOP_CLUSTER_NAME": CLUSTER, "LLAMAOP_NODE_SCALE": str(scale)}
    return subprocess.run([str(ROOT / "hack/cluster.sh"), *args], env=env, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def proc_usage(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--scale", type=int, default=24, help="multiplies hack/cluster/pools.yaml (24: 528 nodes)"
    )
    parser.add_argument("--clients", type=int, default=8, help="parallel kubectl clients creating the jobs")
    parser.add_argument("--keep", action="store_true", help="leave the bench cluster running")
    args = parser.parse_args()

    cluster("down")
    t = time.perf_counter()
    cluster("up", scale=args.scale)
    env_line = cluster("env")
    env = dict(kv.split("=", 1) for kv in env_line.removeprefix("export ").split())
    env["PATH"] = env["PATH"].replace("$PATH", os.environ["PATH"])
    kubectl = Kubectl(env["KUBECONFIG"], env)
    nodes = len(kubectl.json("get", "nodes")["items"])
    print(f"cluster: {nodes} fake nodes up in {time.perf_counter() - t:.1f}s")
    install_api(kubectl)
    pools = len(kubectl.json("get", "acceleratorpools")["items"])

    op = Operator(env, Path("/tmp/llamaop-bench-operator.log"), "--log-level", "WARNING")
    op.start()
    try:
        kubectl.run("create", "namespace", "bench")
        # "At once": several clients create in parallel, as a CI system or a team's scripts would.
        chunks = [[job(i) for i in range(k, args.jobs, args.clients)] for k in range(args.clients)]
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["kubectl", "create", "-n", "bench", "-f", "-"],
                env=kubectl.env,
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
            for _ in chunks
        ]
        for proc, chunk in zip(procs, chunks, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": chunk}))
            proc.stdin.close()
        assert all(proc.wait(timeout=900) == 0 for proc in procs), "kubectl create failed"
        applied = time.perf_counter() - t0

        def phases() -> dict[str, int]:
            out = kubectl.run(
                "get", "lj", "-n", "bench", "--no-headers", "-o", "custom-columns=P:.status.phase"
            )
            counts: dict[str, int] = {}
            for phase in out.stdout.split():
                counts[phase] = counts.get(phase, 0) + 1
            return counts

        def pods() -> str:
            """Worker pods by stage: created, bound to a node, running."""
            out = kubectl.run(
                "get",
                "pods",
                "-n",
                "bench",
                "--no-headers",
                "-o",
                "custom-columns=N:.spec.nodeName,P:.status.phase",
            ).stdout.splitlines()
            bound = sum(1 for line in out if not line.startswith("<none>"))
            running = sum(1 for line in out if line.split()[-1] == "Running")
            return f"pods {len(out)} created, {bound} bound, {running} running"

        seen: dict[str, int] = {}
        shown = [0.0]

        def settled() -> bool:
            """Every job Running, or decided otherwise (Queued for capacity, Failed), none in between."""
            nonlocal seen
            seen = phases()
            if time.perf_counter() - shown[0] >= 10:  # a timeline: which stage the burst waits on
                shown[0] = time.perf_counter()
                print(f"  t={shown[0] - t0:5.1f}s jobs {seen}; {pods()}", flush=True)
            return sum(seen.get(p, 0) for p in ("Running", "Queued", "Failed")) == args.jobs

        placed = (
            wait_for(settled, timeout=900, interval=1.0, what="all jobs settled") and time.perf_counter() - t0
        )
        rss, cpu = proc_usage(op.proc.pid)  # type: ignore[union-attr]
        text = op.metrics()
        requests = metric(text, "llamaop_api_requests_total")
        passes, pass_seconds = (
            metric(text, "llamaop_plan_duration_seconds_count"),
            metric(text, "llamaop_plan_duration_seconds_sum"),
        )
        print(f"jobs: {args.jobs} applied in {applied:.1f}s to {nodes} nodes in {pools} pools; phases {seen}")
        print(f"all settled after {placed:.1f}s: {seen.get('Running', 0)} Running (target: all within 60s)")
        print(f"operator peak RSS {rss:.0f} MB (target: 250 MB), CPU {cpu:.1f}s")
        print(f"API requests by the operator: {requests:.0f} = {requests / args.jobs:.2f} per job")
        print(
            f"reconcile passes: {passes:.0f}, {pass_seconds:.1f}s in all, "
            f"{1000 * pass_seconds / max(passes, 1):.0f} ms mean"
        )
    finally:
        op.stop()
        if not args.keep:
            cluster("down")


if __name__ == "__main__":
    main()
