"""Render hack/cluster/pools.yaml as kwok Node objects (a YAML stream on stdout).

Usage: python hack/cluster/nodes.py [pools.yaml] [--scale N]
(--scale multiplies node counts, for benchmarks)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

# The annotation kwok's binary runtime uses to recognise the nodes it fakes.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "llamaop.io/pool"


def node_manifest(pool: dict[str, Any], index: int) -> dict[str, Any]:
    name = f"{pool['name']}-{index}"
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "type": "kwok",
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": "us-east-1a",
        "node.kubernetes.io/instance-type": pool["instanceType"],
        "karpenter.sh/capacity-type": pool["capacityType"],
        POOL_LABEL: pool["name"],
        **pool.get("labels", {}),
    }
    capacity = {k: str(v) for k, v in pool["capacity"].items()}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
        "spec": {"taints": list(pool.get("taints", []))},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def render(pools_file: Path, scale: int = 1) -> list[dict[str, Any]]:
    pools = yaml.safe_load(pools_file.read_text())["pools"]
    return [node_manifest(p, i) for p in pools for i in range(p["nodes"] * scale)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pools", nargs="?", default=str(Path(__file__).with_name("pools.yaml")))
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    yaml.safe_dump_all(render(Path(args.pools), args.scale), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
