"""What the operator's cluster-wide pod watch costs the API server and the operator, on a large cluster.

Run against a local cluster grown with LLAMAOP_NODE_SCALE (45 gives 990 nodes):

    export LLAMAOP_CLUSTER_NAME=scale LLAMAOP_NODE_SCALE=45 && hack/cluster.sh up
    .venv/bin/python hack/cluster/watch_load.py [--namespaced] [--source DIR] [--churn 500]

It puts one DaemonSet pod on every node (what real nodes run), then measures one churn of `--churn`
other pods (a Deployment scaled up, Running, then deleted) twice: without the operator, then with it
running. The API server's own counters (apiserver_watch_events_total and _sizes for pods,
apiserver_request_total for pod LIST/WATCH) over each window, and the operator's (its pod-watch events
and bytes, CPU seconds, RSS), give the operator's share. `--source` runs another checkout's operator
(e.g. `git archive main`) with this one's virtualenv, for a before/after. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.capacity import pause_workload  # noqa: E402
from tests.kube import Kubectl, local_cluster_env, wait_for  # noqa: E402
from tests.operator_harness import Operator, install_api  # noqa: E402

SYSTEM, CHURN, JOBS = "load-system", "load-churn", "load-jobs"


def running(kubectl: Kubectl, namespace: str) -> int:
    out = kubectl.run("get", "pods", "-n", namespace, "--field-selector=status.phase=Running", "-o", "name")
    return len(out.stdout.split())


def apiserver(kubectl: Kubectl) -> dict[str, float]:
    text = kubectl.run("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if labels.get("resource") != "pods" or labels.get("group", "") not in ("", "core"):
                continue
            if s.name in ("apiserver_watch_events_total", "apiserver_watch_events_sizes_sum"):
                out[s.name] = out.get(s.name, 0.0) + s.value
            elif s.name == "apiserver_request_total" and labels.get("verb") in ("LIST", "WATCH"):
                key = f"requests_{labels['verb']}_{labels.get('scope', '')}"
                out[key] = out.get(key, 0.0) + s.value
            elif s.name == "apiserver_longrunning_requests" and labels.get("verb") == "WATCH":
                out["open_pod_watches"] = out.get("open_pod_watches", 0.0) + s.value
    return out


def operator_metrics(op: Operator) -> dict[str, float]:
    """The operator's pod-watch counters, API calls and CPU seconds (counters: a window takes deltas)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            wanted = s.name.startswith(("llamaop_pod_watch", "llamaop_api_requests")) and s.name.endswith(
                "_total"
            )
            if wanted or s.name == "process_cpu_seconds_total":
                key = s.name + "".join(f"_{v}" for v in s.labels.values())
                out[key] = out.get(key, 0.0) + s.value
    return out


def memory(op: Operator) -> float:
    """The operator's resident memory now, MiB."""
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            if s.name == "process_resident_memory_bytes":
                return round(s.value / 2**20, 1)
    return 0.0


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in after.items() if k != "open_pod_watches"}


def churn(kubectl: Kubectl, replicas: int, nodes: int) -> float:
    t0 = time.monotonic()
    kubectl.apply(pause_workload("Deployment", "churn", "10m", "64Mi", replicas), CHURN)
    wait_for(lambda: running(kubectl, CHURN) >= replicas, timeout=600, interval=2, what="churn pods Running")
    kubectl.run("delete", "deployment", "churn", "-n", CHURN, "--wait=true")
    wait_for(lambda: not kubectl.json("get", "pods", "-n", CHURN)["items"], timeout=600, interval=2,
             what="churn pods gone")  # fmt: skip
    return time.monotonic() - t0


def window(kubectl: Kubectl, measure: Callable[[], float], op: Operator | None) -> dict[str, Any]:
    a0, o0 = apiserver(kubectl), operator_metrics(op) if op else {}
    seconds = measure()
    a1, o1 = apiserver(kubectl), operator_metrics(op) if op else {}
    return {
        "seconds": round(seconds, 1),
        "apiserver": delta(a1, a0),
        "operator": delta(o1, o0) if op else {},
        "open_pod_watches": a1.get("open_pod_watches"),
        "rss_mib": memory(op) if op else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaced", action="store_true", help="llamaop run --namespace load-jobs")
    parser.add_argument("--source", type=Path, default=None, help="run this checkout's operator instead")
    parser.add_argument("--churn", type=int, default=500)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of a quiet cluster to measure")
    args = parser.parse_args()
    env = local_cluster_env()
    kubectl = Kubectl(env["KUBECONFIG"], env)
    install_api(kubectl)
    for ns in (SYSTEM, CHURN, JOBS):
        kubectl.run("create", "namespace", ns, check=False)
    nodes = len(kubectl.run("get", "nodes", "-l", "type=kwok", "-o", "name").stdout.split())
    kubectl.apply(pause_workload("DaemonSet", "node-agent", "100m", "64Mi"), SYSTEM)
    wait_for(lambda: running(kubectl, SYSTEM) >= nodes, timeout=900, interval=3, what="DaemonSet pods")
    pods = len(kubectl.run("get", "pods", "-A", "-o", "name").stdout.split())
    report: dict[str, Any] = {"nodes": nodes, "pods": pods, "namespaced": args.namespaced,
                              "source": str(args.source or ROOT)}  # fmt: skip
    report["without_operator"] = window(kubectl, lambda: churn(kubectl, args.churn, nodes), None)

    op_env = dict(env)
    if args.source:
        op_env["PYTHONPATH"] = f"{args.source / 'operator'}:{args.source / 'workloads'}"
    log = Path(tempfile.mkdtemp(prefix="watch-load-")) / "operator.log"
    op = Operator(op_env, log, namespaces=[JOBS] if args.namespaced else [])
    a0 = apiserver(kubectl)
    t0 = time.monotonic()
    op.start()
    op.wait_reconciling(timeout=600)
    report["startup"] = {
        "seconds_to_first_pass": round(time.monotonic() - t0, 1),
        "apiserver": delta(apiserver(kubectl), a0),
        "operator": operator_metrics(op),
        "rss_mib": memory(op),
    }
    try:
        report["idle"] = window(kubectl, lambda: time.sleep(args.idle) or args.idle, op)
        report["with_operator"] = window(kubectl, lambda: churn(kubectl, args.churn, nodes), op)
    finally:
        op.stop()
    print(json.dumps(report, indent=1))
    if os.environ.get("LLAMAOP_WATCH_LOAD_REPORT"):
        Path(os.environ["LLAMAOP_WATCH_LOAD_REPORT"]).write_text(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
