"""Operator at scale: 1,000 LlamaJobs applied at once to a cluster of 500+ fake nodes in 8 pools.

Prints seconds until every job is placed and Running, the operator's peak RSS and CPU seconds, and the
Kubernetes API requests it made per job. Runs on its own local cluster (`llamaop-bench`), removed after.
Nothing is asserted: these are numbers to compare between runs on the same machine.

Usage: .venv/bin/python hack/bench/operator_at_scale.py [--jobs 1000] [--scale 24] [--backlog] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.watch.watch import iter_resp_lines

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


class Watched:
    """One kind's objects in a namespace, summarised and kept current by a single watch in a thread. The
    bench used to poll `kubectl get` every second, and each poll of 1,000 LlamaJobs cost about 1.1
    CPU-seconds in kubectl alone: about half a core taken from the cluster it measures."""

    def __init__(self, kubeconfig: str, path: str, summarize: Callable[[dict[str, Any]], str]) -> None:
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.path, self.summarize = path, summarize
        self.items: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(self.items.values()))

    def _run(self) -> None:
        version = ""
        while not self.stopped.is_set():
            query = [("watch", "true"), ("timeoutSeconds", "900")]
            if version:
                query.append(("resourceVersion", version))
            try:
                method, url, headers, *_ = self.api.param_serialize(
                    "GET", self.path, query_params=query, auth_settings=["BearerToken"]
                )
                resp = self.api.call_api(method, url, header_params=headers).response
                for line in iter_resp_lines(resp):
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":  # e.g. 410 Gone: start over from a fresh list
                        version = ""
                        break
                    version = obj["metadata"]["resourceVersion"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.items.pop(obj["metadata"]["name"], None)
                        else:
                            self.items[obj["metadata"]["name"]] = self.summarize(obj)
            except Exception as exc:  # a dropped stream: watch again from where it was
                if self.stopped.is_set():
                    return
                print(f"  (watch of {self.path} restarts: {exc})", file=sys.stderr)
                time.sleep(0.5)


def job_phase(job: dict[str, Any]) -> str:
    return str(job.get("status", {}).get("phase", "<none>"))


def pod_stage(pod: dict[str, Any]) -> str:
    if pod.get("status", {}).get("phase") == "Running":
        return "Running"
    return "bound" if pod.get("spec", {}).get("nodeName") else "created"


def create_jobs(kubectl: Kubectl, count: int, clients: int) -> float:
    """Create the jobs "at once": several clients in parallel, as a CI system or a team's scripts would.
    Returns the seconds it took."""
    chunks = [[job(i) for i in range(k, count, clients)] for k in range(clients)]
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
    return time.perf_counter() - t0


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


def harness_cpu() -> float:
    """CPU seconds of this process and the children it waited for (the kubectl creates)."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--scale", type=int, default=24, help="multiplies hack/cluster/pools.yaml (24: 528 nodes)"
    )
    parser.add_argument("--clients", type=int, default=8, help="parallel kubectl clients creating the jobs")
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="create the jobs first, then start the operator (a restart with a backlog); time from its start",
    )
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
    kubectl.run("create", "namespace", "bench")
    jobs = Watched(kubectl.kubeconfig, "/apis/llamaop.io/v1alpha1/namespaces/bench/llamajobs", job_phase)
    pods = Watched(kubectl.kubeconfig, "/api/v1/namespaces/bench/pods", pod_stage)
    try:
        if args.backlog:  # the jobs wait for an operator that starts (or restarts) now
            applied = create_jobs(kubectl, args.jobs, args.clients)
            t0 = time.perf_counter()
            op.start()
        else:
            op.start()
            # A burst meets a running operator: its first reconcile pass means every index (jobs, pods,
            # nodes, pools) is listed. Right after install_api the CRD's storage may still be initializing.
            t = time.perf_counter()
            op.wait_reconciling()
            print(f"operator reconciling {time.perf_counter() - t:.1f}s after its metrics endpoint came up")
            t0 = time.perf_counter()
            applied = create_jobs(kubectl, args.jobs, args.clients)

        shown = t0

        def settled() -> bool:
            """Every job Running, or decided otherwise (Queued for capacity, Failed), none in between."""
            nonlocal shown
            phases = jobs.counts()
            if time.perf_counter() - shown >= 10:  # a timeline: which stage the burst waits on
                shown = time.perf_counter()
                stages = pods.counts()
                running = stages.get("Running", 0)
                print(
                    f"  t={shown - t0:5.1f}s jobs {phases}; pods {sum(stages.values())} created, "
                    f"{stages.get('bound', 0) + running} bound, {running} running",
                    flush=True,
                )
            return sum(phases.get(p, 0) for p in ("Running", "Queued", "Failed")) == args.jobs

        wait_for(settled, timeout=900, interval=0.1, what="all jobs settled")
        placed = time.perf_counter() - t0
        seen = jobs.counts()
        rss, cpu = proc_usage(op.proc.pid)  # type: ignore[union-attr]
        samples = op.samples()
        requests = samples["llamaop_api_requests_total"]
        passes = samples["llamaop_plan_duration_seconds_count"]
        pass_seconds = samples["llamaop_plan_duration_seconds_sum"]
        print(f"jobs: {args.jobs} applied in {applied:.1f}s to {nodes} nodes in {pools} pools; phases {seen}")
        since = "the operator started" if args.backlog else "the first create"
        print(
            f"all settled {placed:.1f}s after {since}: {seen.get('Running', 0)} Running "
            "(target: all within 60s)"
        )
        print(f"operator peak RSS {rss:.0f} MB (target: 250 MB), CPU {cpu:.1f}s")
        print(f"this bench's own CPU (watching, kubectl create): {harness_cpu():.1f}s")
        print(f"API requests by the operator: {requests:.0f} = {requests / args.jobs:.2f} per job")
        print(
            f"reconcile passes: {passes:.0f}, {pass_seconds:.1f}s in all, "
            f"{1000 * pass_seconds / max(passes, 1):.0f} ms mean"
        )
    finally:
        jobs.stopped.set()
        pods.stopped.set()
        op.stop()
        if not args.keep:
            cluster("down")


if __name__ == "__main__":
    main()
