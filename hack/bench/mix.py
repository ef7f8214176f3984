"""The operator benchmarks' job mix, and the local cluster's pools and nodes as the operator sees them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from llama_operator.api import AcceleratorPool

ROOT = Path(__file__).resolve().parents[2]

# A mix a platform team might submit: small fine-tunes and evals of several sizes, a few servers.
SHAPES: list[dict[str, Any]] = [
    {"families": ["any"], "devicesPerNode": 1},
    {"families": ["nvidia"], "devicesPerNode": 1},
    {"families": ["neuron"], "devicesPerNode": 1},
    {"families": ["nvidia"], "devicesPerNode": 4},
    {"families": ["neuron"], "devicesPerNode": 4},
    {"families": ["cpu"]},
    {"families": ["any"], "devicesPerNode": 8},
    {"families": ["neuron"], "devicesPerNode": 16},
]


def job_spec(i: int) -> dict[str, Any]:
    """The i-th job of the mix (deterministic)."""
    return {
        "mode": "train",
        "model": {"preset": "tiny" if i % 3 else "llama3-1b"},
        "training": {"steps": 1000, "sequenceLength": 1024, "batchSize": 64},
        "resources": SHAPES[i % len(SHAPES)],
        "priority": i % 5,
    }


def example_pools() -> list[AcceleratorPool]:
    """examples/pools/, the AcceleratorPools the benchmarks' clusters get (see tests/operator_harness.py)."""
    return [
        AcceleratorPool.model_validate(yaml.safe_load(path.read_text()))
        for path in sorted((ROOT / "examples" / "pools").glob("*.yaml"))
    ]


def node_bodies(scale: int) -> list[dict[str, Any]]:
    """hack/cluster/pools.yaml's kwok nodes times `scale` (22 per unit), Ready as kwok reports them."""
    spec = importlib.util.spec_from_file_location("llamaop_cluster_nodes", ROOT / "hack/cluster/nodes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bodies: list[dict[str, Any]] = module.render(ROOT / "hack/cluster/pools.yaml", scale)
    for body in bodies:
        body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return bodies
