"""Print each node pool of the current cluster with its nodes and free accelerators.

Reads nodes and pods with the `kubectl` on PATH (KUBECONFIG decides the cluster).
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

POOL_LABEL = "llamaop.io/pool"
ACCELERATORS = ("aws.amazon.com/neuron", "nvidia.com/gpu")
CPU = "cpu"  # what a CPU pool offers instead of an accelerator


def kubectl_json(*args: str) -> dict[str, Any]:
    out = subprocess.run(["kubectl", *args, "-o", "json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def is_ready(node: dict[str, Any]) -> bool:
    conds = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def quantity(value: str | int) -> float:
    """Kubernetes quantity to a number (enough of the grammar for cpu and device counts)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def requested(pod: dict[str, Any], resource: str) -> float:
    containers = pod["spec"]["containers"]
    return sum(quantity(c.get("resources", {}).get("requests", {}).get(resource, 0)) for c in containers)


def main() -> None:
    nodes = kubectl_json("get", "nodes")["items"]
    pods = kubectl_json("get", "pods", "--all-namespaces", "--field-selector=spec.nodeName!=")["items"]
    used: dict[tuple[str, str], float] = defaultdict(float)
    for pod in pods:
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for res in (*ACCELERATORS, CPU):
            used[(pod["spec"]["nodeName"], res)] += requested(pod, res)

    rows: dict[str, dict[str, Any]] = {}
    for node in nodes:
        labels = node["metadata"].get("labels", {})
        pool = labels.get(POOL_LABEL, "(none)")
        row = rows.setdefault(
            pool,
            {
                "instance": labels.get("node.kubernetes.io/instance-type", "?"),
                "capacity": labels.get("karpenter.sh/capacity-type", "?"),
                "nodes": 0,
                "ready": 0,
                "resource": CPU,
                "alloc": 0,
                "free": 0,
            },
        )
        row["nodes"] += 1
        ready = is_ready(node) and not node["spec"].get("unschedulable", False)
        row["ready"] += int(ready)
        alloc = node["status"].get("allocatable", {})
        res = next((r for r in ACCELERATORS if r in alloc), CPU)
        row["resource"] = res
        row["alloc"] += quantity(alloc.get(res, 0))
        if ready:
            row["free"] += quantity(alloc.get(res, 0)) - used[(node["metadata"]["name"], res)]

    table = Table(title="Node pools")
    for col in ("pool", "instance type", "capacity", "nodes", "ready", "accelerator", "allocatable", "free"):
        table.add_column(col)
    for pool, r in sorted(rows.items()):
        table.add_row(
            pool, r["instance"], r["capacity"], str(r["nodes"]), str(r["ready"]), r["resource"],
            f"{r['alloc']:g}", f"{r['free']:g}",
        )  # fmt: skip
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
