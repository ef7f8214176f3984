"""Operator at scale: 1,000 LlamaJobs at once on 500+ fake nodes, against Kubernetes' own floor.

Each run has two halves on the same cluster, with nothing else of the bench running in between:

  floor     the pods the operator would create for those jobs (rendered by its own pure code: names,
            requests, node selectors, tolerations, affinity), created directly by a plain client at the
            same concurrency, bound by kube-scheduler and started by kwok. The time until all run is what
            Kubernetes needs for the workload, whoever submits it.
  operator  the LlamaJobs, and the operator turning them into those pods. Settled: every job Running or
            decided otherwise (Queued for capacity, Failed).

It prints the operator's settle time as a ratio to the floor's (target: at most 1.25), the operator's
API requests per job, CPU seconds per job and peak RSS. Burst (default): 8 kubectl clients create the
jobs, or the floor's pods, against a running operator. --backlog: the jobs wait first and the clock
starts when the operator starts; its floor is the pods created at the operator's own write concurrency.

The cluster is `$LLAMAOP_CLUSTER_NAME-bench` (default llamaop-bench), made or reused at the right size
and removed after the runs unless --keep. Absolute seconds differ twice over between machines and runs
on a shared machine; compare ratios.

Usage: .venv/bin/python hack/bench/operator_at_scale.py [--jobs 1000] [--scale 24] [--backlog] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.watch.watch import iter_resp_lines
from mix import ROOT, job_spec, node_bodies
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(ROOT))

from llama_operator.api import AcceleratorPool
from llama_operator.controller.kube import Kube, load_config
from llama_operator.controller.main import build_options
from llama_operator.controller.state import Loop
from llama_operator.lifecycle.actions import CreateWorkers
from llama_operator.lifecycle.snapshot import Snapshot, reconcile_all
from llama_operator.lifecycle.views import job_view, node_view
from llama_operator.planning import plan
from tests.kube import Kubectl, llamajob_manifest, wait_for
from tests.operator_harness import Operator, install_api

CLUSTER = os.environ.get("LLAMAOP_CLUSTER_NAME", "llamaop") + "-bench"
TARGET = 1.25
CONCURRENCY = Loop().concurrency  # the operator's writes in flight (the backlog floor's)
Manifest = dict[str, Any]


def jobs(count: int) -> list[Manifest]:
    return [llamajob_manifest(f"bench-{i:04d}", job_spec(i)) for i in range(count)]


def floor_pods(kubectl: Kubectl, manifests: Sequence[Manifest], namespace: str) -> list[Manifest]:
    """The worker pods the operator would create for these jobs on this cluster now: one pass of its own
    lifecycle and planner over the cluster's nodes and pools, rendered by its own code. Only what ties a
    pod to the operator goes: the owner reference (no LlamaJob exists for the garbage collector to find)
    and the per-job ServiceAccount (the floor creates pods, nothing around them)."""
    nodes = {n.name: n for n in map(node_view, kubectl.json("get", "nodes")["items"])}
    pools = {
        p["metadata"]["name"]: AcceleratorPool.model_validate(p)
        for p in kubectl.json("get", "acceleratorpools")["items"]
    }
    now = datetime.now(UTC)
    views = {}
    for i, manifest in enumerate(manifests):
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace, "uid": f"floor-{i}"}}
        body["metadata"]["creationTimestamp"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        view = job_view(body)
        views[view.key] = view
    options = build_options(argparse.Namespace())
    snap = Snapshot(now=now, jobs=views, pods={}, nodes=nodes, pools=pools)
    actions = reconcile_all(snap, options, lambda j, i, n: plan(j, i, now=n, catalog=options.catalog))
    pods = []
    for result in actions:
        for action in result.actions:
            if isinstance(action, CreateWorkers):
                for m in action.manifests:
                    if m["kind"] == "Pod":
                        pod = json.loads(json.dumps(m))
                        del pod["metadata"]["ownerReferences"]
                        pod["spec"]["serviceAccountName"] = "default"
                        pods.append(pod)
    return pods


class Watched:
    """One kind's objects in a namespace, summarised and kept current by a single watch in a thread.
    (Polling `kubectl get` every second cost about 1.1 CPU-seconds per poll of 1,000 LlamaJobs: half a core
    taken from the cluster being measured.)"""

    def __init__(self, kubeconfig: str, path: str, summarize: Callable[[dict[str, Any]], str]) -> None:
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.path, self.summarize = path, summarize
        self.items: dict[str, str] = {}
        self.first: dict[str, dict[str, float]] = {}  # stage -> name -> when the watch first showed it
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(self.items.values()))

    def stop(self) -> None:
        self.stopped.set()

    def last_seen(self, t0: float) -> str:
        """When the last object reached each stage, from t0: which stage a run waited on."""
        with self.lock:
            lasts = {stage: max(seen.values()) - t0 for stage, seen in self.first.items() if seen}
        return ", ".join(f"last {stage} {t:.1f}s" for stage, t in sorted(lasts.items(), key=lambda kv: kv[1]))

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
                    if self.stopped.is_set():
                        return
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
                            name, stage = obj["metadata"]["name"], self.summarize(obj)
                            self.items[name] = stage
                            self.first.setdefault(stage, {}).setdefault(name, time.perf_counter())
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


def create_by_clients(kubectl: Kubectl, items: Sequence[Manifest], clients: int, namespace: str) -> float:
    """Create the objects "at once": `clients` kubectl processes in parallel, each one object at a time (as
    a CI system or a team's scripts would). Returns the seconds it took."""
    chunks = [list(items[k::clients]) for k in range(clients)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["kubectl", "create", "-n", namespace, "-f", "-"],
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


def create_concurrently(kubeconfig: str, items: Sequence[Manifest], concurrency: int) -> float:
    """Create the objects with up to `concurrency` requests in flight, through the operator's own HTTP
    client (aiohttp, raw JSON): what the operator's writes cost the API server, without the operator."""

    async def run() -> None:
        kube = Kube(load_config(kubeconfig), connections=concurrency)
        slots = asyncio.Semaphore(concurrency)

        async def one(item: Manifest) -> None:
            async with slots:
                await kube.create(item)

        try:
            await asyncio.gather(*(one(item) for item in items))
        finally:
            await kube.close()

    t0 = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - t0


def profile(op: Operator, out: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the operator into `out` (collapsed stacks) until SIGINT, if asked for."""
    if not out:
        return None
    assert op.proc is not None
    cmd = ["py-spy", "record", "--pid", str(op.proc.pid), "--format", "raw", "--rate", "50", "--output", out]
    return subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pprof(kubectl: Kubectl, out: str | None, seconds: int = 30) -> subprocess.Popen[bytes] | None:
    """A CPU profile of kube-apiserver over the next `seconds` into `out` (read it: go tool pprof -top)."""
    if not out:
        return None
    with open(out, "wb") as sink:
        cmd = ["kubectl", "get", "--raw", f"/debug/pprof/profile?seconds={seconds}"]
        return subprocess.Popen(cmd, env=kubectl.env, stdout=sink)


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


def cluster_cpu() -> dict[str, float]:
    """CPU seconds so far of each of the bench cluster's components (kwokctl runs them from its bin dir)."""
    bindir = f"/clusters/{CLUSTER}/bin/"
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            if bindir not in exe:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        name = exe.rsplit("/", 1)[1]
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def api_requests(kubectl: Kubectl) -> Counter[str]:
    """kube-apiserver's request counts so far, by verb and resource (from its own metrics)."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(kubectl.run("get", "--raw", "/metrics").stdout):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
                counts[f"{labels['verb']} {labels.get('resource') or '-'}{sub}"] += int(sample.value)
    return counts


def show_requests(before: Counter[str], after: Counter[str], jobs: int) -> None:
    served = after - before
    top = ", ".join(f"{kind} {count / jobs:.1f}" for kind, count in served.most_common(9))
    print(f"  kube-apiserver requests per job: {sum(served.values()) / jobs:.1f} ({top})")


def spent(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in sorted(cluster_cpu().items())}


def show_cpu(label: str, used: dict[str, float]) -> None:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in used.items())
    print(f"  {label} CPU-s: {sum(used.values()):.1f} ({parts})")


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def busy_cpu() -> float:
    """CPU seconds all processes have run so far (user, nice, system; from /proc/stat). Interrupts are left
    out: the loopback traffic of the bench's own cluster is handled there, in no process's time."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_other: float, max_wait: float, pids: Sequence[int] = ()) -> None:
    """Before a half: wait (up to `max_wait` s) until the cores are nearly all the bench's, i.e. what
    other processes take (the machine's busy time less the cluster's, `pids`' and this process's) is under
    `max_other` cores over 2 s, and the cluster itself is idle (under 0.2 core: the previous half's
    namespace deletion or an operator's start-up is over). On a shared 2-core machine the floor took
    6-42 s for the same pods as other sessions' load came and went; the load average cannot gate that,
    since it counts the bench's own previous half for a minute after. Prints what the half starts at."""
    deadline = time.monotonic() + max_wait
    while True:
        cluster0, mine0, busy0, t = cluster_cpu(), harness_cpu(), busy_cpu(), time.perf_counter()
        pids0 = sum(proc_usage(pid)[1] for pid in pids)
        time.sleep(2)
        seconds = time.perf_counter() - t
        ours = sum(spent(cluster0).values()) + sum(proc_usage(pid)[1] for pid in pids) - pids0
        other = (busy_cpu() - busy0 - ours - (harness_cpu() - mine0)) / seconds
        if (other <= max_other and ours / seconds < 0.2) or time.monotonic() > deadline:
            break
    print(
        f"  (others took {other:.2f} cores, the cluster {ours / seconds:.2f}; {machine_load()})", flush=True
    )


def harness_cpu() -> float:
    """CPU seconds of this process and the children it waited for (the kubectl creates)."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def wait_settled(
    what: str, done: Callable[[], bool], timeline: Callable[[], str], t0: float, timeout: float = 900
) -> float:
    shown = t0

    def probe() -> bool:
        nonlocal shown
        if time.perf_counter() - shown >= 10:  # a timeline: which stage the run waits on
            shown = time.perf_counter()
            print(f"  t={shown - t0:5.1f}s {timeline()}", flush=True)
        return done()

    wait_for(probe, timeout=timeout, interval=0.1, what=what)
    return time.perf_counter() - t0


def pods_timeline(pods: Watched) -> str:
    stages = pods.counts()
    running = stages.get("Running", 0)
    return f"pods {sum(stages.values())} created, {stages.get('bound', 0) + running} bound, {running} running"


def drop_namespace(kubectl: Kubectl, namespace: str) -> None:
    """Delete a run's namespace and wait until it is gone, so the next half starts on a quiet cluster."""
    kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=600s")


def ready_namespace(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("create", "namespace", namespace)
    # Pods name the namespace's default ServiceAccount, which its controller makes a moment later.
    wait_for(
        lambda: kubectl.run("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0,
        timeout=60,
        what=f"the default ServiceAccount of {namespace}",
    )


def run_floor(kubectl: Kubectl, args: argparse.Namespace, namespace: str) -> tuple[float, int, float]:
    ready_namespace(kubectl, namespace)
    pods = floor_pods(kubectl, jobs(args.jobs), namespace)
    watch = Watched(kubectl.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", pod_stage)
    wait_quiet(args.max_other, args.max_wait)
    requests0 = api_requests(kubectl)
    cpu0, harness0, busy0 = cluster_cpu(), harness_cpu(), busy_cpu()
    try:
        t0 = time.perf_counter()
        if args.backlog:
            created = create_concurrently(kubectl.kubeconfig, pods, CONCURRENCY)
            how = f"{CONCURRENCY} requests in flight"
        else:
            created = create_by_clients(kubectl, pods, args.clients, namespace)
            how = f"{args.clients} kubectl clients"
        settled = wait_settled(
            "the floor's pods to run",
            lambda: watch.counts().get("Running", 0) == len(pods),
            lambda: pods_timeline(watch),
            t0,
        )
        used = spent(cpu0)
    finally:
        watch.stop()
    print(
        f"floor: {len(pods)} pods created by {how} in {created:.1f}s; "
        f"all Running {settled:.1f}s after the first create"
    )
    print(f"  pods: {watch.last_seen(t0)}; the bench's CPU (watch, kubectl): {harness_cpu() - harness0:.1f}s")
    show_cpu("cluster", used)
    others = busy_cpu() - busy0 - sum(used.values()) - (harness_cpu() - harness0)
    print(f"  other processes took {others / settled:.2f} cores meanwhile")
    show_requests(requests0, api_requests(kubectl), len(pods))
    return settled, len(pods), sum(used.values())


def run_operator(
    kubectl: Kubectl, env: dict[str, str], args: argparse.Namespace, namespace: str
) -> dict[str, float]:
    kubectl.run("create", "namespace", namespace)
    log = Path(f"/tmp/{CLUSTER}-operator.log")
    log.unlink(missing_ok=True)
    op = Operator(env, log, "--log-level", args.log_level)
    job_watch = Watched(
        kubectl.kubeconfig, f"/apis/llamaop.io/v1alpha1/namespaces/{namespace}/llamajobs", job_phase
    )
    pod_watch = Watched(kubectl.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", pod_stage)
    manifests = jobs(args.jobs)
    cpu0 = busy0 = bench = 0.0
    cluster0: dict[str, float] = {}
    requests0: Counter[str] = Counter()
    op_cpu0 = 0.0  # the operator's CPU before the clock starts (its start-up, in a burst)
    try:
        if args.backlog:  # the jobs wait for an operator that starts (or restarts) now
            applied = create_by_clients(kubectl, manifests, args.clients, namespace)
            wait_for(
                lambda: sum(job_watch.counts().values()) == args.jobs, timeout=120, what="the jobs listed"
            )
            wait_quiet(args.max_other, args.max_wait)
            requests0, cluster0, cpu0, busy0 = api_requests(kubectl), cluster_cpu(), harness_cpu(), busy_cpu()
            t0 = time.perf_counter()
            apiserver = pprof(kubectl, args.apiserver_pprof)
            op.start()
            profiler = profile(op, args.py_spy)
        else:
            op.start()
            profiler = profile(op, args.py_spy)
            # A burst meets a running operator: its first reconcile pass means every index (jobs, pods,
            # nodes, pools) is listed. Right after install_api the CRD's storage may still be initializing.
            op.wait_reconciling()
            wait_quiet(args.max_other, args.max_wait, [op.proc.pid])  # type: ignore[union-attr]
            requests0, cluster0, cpu0, busy0 = api_requests(kubectl), cluster_cpu(), harness_cpu(), busy_cpu()
            op_cpu0 = proc_usage(op.proc.pid)[1]  # type: ignore[union-attr]
            t0 = time.perf_counter()
            apiserver = pprof(kubectl, args.apiserver_pprof)
            applied = create_by_clients(kubectl, manifests, args.clients, namespace)

        def settled() -> bool:
            phases = job_watch.counts()
            return sum(phases.get(p, 0) for p in ("Running", "Queued", "Failed")) == args.jobs

        def timeline() -> str:
            return f"jobs {job_watch.counts()}; {pods_timeline(pod_watch)}"

        elapsed = wait_settled("all jobs settled", settled, timeline, t0)
        print(f"  jobs: {job_watch.last_seen(t0)}; pods: {pod_watch.last_seen(t0)}")
        used = spent(cluster0)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
            print(f"  py-spy profile of the operator: {args.py_spy}")
        if apiserver is not None:
            apiserver.wait(timeout=120)
            print(f"  kube-apiserver profile of the first 30s: {args.apiserver_pprof}")
        rss, cpu = proc_usage(op.proc.pid)  # type: ignore[union-attr]
        cpu -= op_cpu0
        # Read before op.stop(): once waited for, the operator's CPU counts among this process's children.
        bench = harness_cpu() - cpu0
        others = busy_cpu() - busy0 - sum(used.values()) - cpu - bench
        samples = op.samples()
        phases = job_watch.counts()
    finally:
        job_watch.stop()
        pod_watch.stop()
        op.stop()
    requests = samples["llamaop_api_requests_total"]
    passes = samples["llamaop_plan_duration_seconds_count"]
    pass_seconds = samples["llamaop_plan_duration_seconds_sum"]
    since = "the operator started" if args.backlog else "the first create"
    print(f"operator: {args.jobs} jobs created by {args.clients} kubectl clients in {applied:.1f}s; "
          f"all settled {elapsed:.1f}s after {since}; phases {phases}")  # fmt: skip
    print(
        f"  reconcile passes: {passes:.0f}, {pass_seconds:.1f}s in all, "
        f"{1000 * pass_seconds / max(passes, 1):.0f} ms mean; "
        f"the bench's own CPU (watches, kubectl): {bench:.1f}s"
    )
    show_cpu("cluster", used)
    print(f"  other processes took {others / elapsed:.2f} cores meanwhile")
    show_requests(requests0, api_requests(kubectl), args.jobs)
    return {
        "settled": elapsed,
        "requests": requests,
        "cpu": cpu,
        "rss": rss,
        "running": phases.get("Running", 0),
        "cluster_cpu": sum(used.values()),
    }


def bring_up(scale: int, fresh: bool) -> tuple[Kubectl, dict[str, str], int]:
    """The bench cluster at `scale`: reused when it is up with exactly that many nodes, else made anew."""
    want = len(node_bodies(scale))
    env: dict[str, str] = {}
    if not fresh:
        try:
            env = dict(kv.split("=", 1) for kv in cluster("env").removeprefix("export ").split())
            probe = Kubectl(
                env["KUBECONFIG"], {**env, "PATH": env["PATH"].replace("$PATH", os.environ["PATH"])}
            )
            if len(probe.json("get", "nodes", "-l", "type=kwok")["items"]) != want:
                env = {}
        except (subprocess.CalledProcessError, AssertionError, KeyError):
            env = {}
    t = time.perf_counter()
    if not env:
        cluster("down")
        cluster("up", scale=scale)
        env = dict(kv.split("=", 1) for kv in cluster("env").removeprefix("export ").split())
    env["PATH"] = env["PATH"].replace("$PATH", os.environ["PATH"])
    kubectl = Kubectl(env["KUBECONFIG"], env)
    install_api(kubectl)
    nodes = len(kubectl.json("get", "nodes", "-l", "type=kwok")["items"])
    print(f"cluster {CLUSTER}: {nodes} fake nodes ready in {time.perf_counter() - t:.1f}s")
    return kubectl, env, nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--scale", type=int, default=24, help="multiplies hack/cluster/pools.yaml (24: 528 nodes)"
    )
    parser.add_argument(
        "--clients", type=int, default=8, help="parallel kubectl clients creating jobs or pods"
    )
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="create the jobs first, then start the operator (a restart with a backlog); time from its start",
    )
    parser.add_argument("--runs", type=int, default=1, help="floor and operator this many times each")
    parser.add_argument("--floor-only", action="store_true", help="only the floor, --runs times")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the floor half that counts nowhere"
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.5,
        help="before each half, wait while other processes take more than this many cores",
    )
    parser.add_argument("--max-wait", type=float, default=300, help="seconds to wait for --max-other at most")
    parser.add_argument("--fresh", action="store_true", help="make the bench cluster anew even if it is up")
    parser.add_argument("--keep", action="store_true", help="leave the bench cluster running")
    parser.add_argument(
        "--log-level", default="WARNING", help="the operator's (its log: /tmp/CLUSTER-operator.log)"
    )
    parser.add_argument("--py-spy", metavar="FILE", help="record the operator with py-spy (collapsed stacks)")
    parser.add_argument("--apiserver-pprof", metavar="FILE", help="profile kube-apiserver's first 30 s")
    args = parser.parse_args()

    kubectl, env, nodes = bring_up(args.scale, args.fresh)
    case = "backlog" if args.backlog else "burst"

    def floor(label: str) -> tuple[float, int, float]:
        namespace = f"floor-{case}-{label}-{os.getpid()}"
        print(f"floor {label} ({case}, {args.jobs} jobs, {nodes} nodes)")
        got = run_floor(kubectl, args, namespace)
        drop_namespace(kubectl, namespace)
        return got

    ratios: list[float] = []
    floors: list[float] = []
    try:
        if args.warmup:
            # The first half on a cluster runs against a cold API server (its caches, Go's heap sizing) and
            # nodes still settling after their creation: it is measured and printed, and counts nowhere.
            floor("warm-up")
        before = floor("0")
        floors.append(before[0])
        for run in range(1, args.runs + 1):
            if args.floor_only:
                floors.append(floor(str(run))[0])
                continue
            print(f"run {run}/{args.runs} ({case}, {args.jobs} jobs, {nodes} nodes)")
            namespace = f"op-{case}-{run}-{os.getpid()}"
            got = run_operator(kubectl, env, args, namespace)
            drop_namespace(kubectl, namespace)
            # The operator's half is judged against the floors either side of it: on a shared machine the
            # load drifts between halves, and the mean of the two brackets that drift.
            after = floor(str(run))
            floors.append(after[0])
            floor_s, floor_cpu = (before[0] + after[0]) / 2, (before[2] + after[2]) / 2
            ratio = got["settled"] / floor_s
            ratios.append(ratio)
            print(
                f"ratio {case} operator/floor settle: {ratio:.2f} ({got['settled']:.1f}s / {floor_s:.1f}s, "
                f"the mean of the floors before and after, {before[0]:.1f}s and {after[0]:.1f}s; "
                f"target <= {TARGET}); {got['running']:.0f} jobs Running, the floor ran {after[1]} pods"
            )
            cpu_ratio = (got["cluster_cpu"] + got["cpu"]) / floor_cpu
            print(
                f"ratio {case} cluster+operator CPU / floor cluster CPU: {cpu_ratio:.2f} "
                f"({got['cluster_cpu']:.1f}s + {got['cpu']:.1f}s / {floor_cpu:.1f}s)"
            )
            print(
                f"  operator: {got['requests'] / args.jobs:.2f} API requests per job, "
                f"{got['cpu'] / args.jobs * 1000:.1f} ms CPU per job ({got['cpu']:.1f}s), "
                f"peak RSS {got['rss']:.0f} MB"
            )
            before = after
    finally:
        if not args.keep:
            cluster("down")
    if len(floors) > 1:
        spread = max(floors) / min(floors)
        print(f"floor {case} over {len(floors)} halves: {', '.join(f'{f:.1f}' for f in floors)} s "
              f"(max/min {spread:.2f})")  # fmt: skip
    if len(ratios) > 1:
        print(
            f"ratio {case} over {len(ratios)} runs: median {statistics.median(ratios):.2f}, "
            f"min {min(ratios):.2f}, max {max(ratios):.2f} (target <= {TARGET})"
        )


if __name__ == "__main__":
    main()
