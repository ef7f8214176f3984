"""Make kind's worker nodes look like the pools of hack/cluster/pools.yaml.

Each worker carries `llamaop.io/pool: NAME` from kind-config.yaml; this gives it the rest of that pool's
labels, its taints, and its extended resources (accelerators, NeuronCores, EFA) in node status, the way a
device plugin would advertise them. Idempotent. Usage: KUBECONFIG=... python hack/kind/nodes.py
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
POOLS = ROOT / "hack" / "cluster" / "pools.yaml"
POOL_LABEL = "llamaop.io/pool"
# Labels kind's nodes have of their own (hostname, arch, os); the fake-node marker does not apply.
SKIP_LABELS = {"type", "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os"}


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def pool_labels(pool: dict[str, Any]) -> dict[str, str]:
    """The labels the local cluster's fake nodes of `pool` get: one definition for both clusters."""
    spec = importlib.util.spec_from_file_location("cluster_nodes", POOLS.with_name("nodes.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels: dict[str, str] = module.node_manifest(pool, 0)["metadata"]["labels"]
    return {k: v for k, v in labels.items() if k not in SKIP_LABELS}


def taint_arg(taint: dict[str, str]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint['key']}{value}:{taint['effect']}"


def main() -> None:
    pools = {p["name"]: p for p in yaml.safe_load(POOLS.read_text())["pools"]}
    nodes = json.loads(kubectl("get", "nodes", "-l", POOL_LABEL, "-o", "json"))["items"]
    if not nodes:
        sys.exit(
            f"no node has the label {POOL_LABEL}: is this the kind cluster of hack/kind/kind-config.yaml?"
        )
    for node in nodes:
        name = node["metadata"]["name"]
        pool = pools[node["metadata"]["labels"][POOL_LABEL]]
        labels = [f"{k}={v}" for k, v in pool_labels(pool).items()]
        kubectl("label", "node", name, "--overwrite", *labels)
        for taint in pool.get("taints", []):
            kubectl("taint", "node", name, "--overwrite", taint_arg(taint))
        # Extended resources only: cpu, memory and pods are the real machine's.
        extended = {k: str(v) for k, v in pool["capacity"].items() if "/" in k}
        if extended:
            patch = {"status": {"capacity": extended, "allocatable": extended}}
            kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
        print(f"[kind] {name}: pool {pool['name']}, {extended or 'no accelerators'}")


if __name__ == "__main__":
    main()
