"""Every example parses, every example pool resolves, and every example job plans on the example pools."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from llama_operator.catalog import builtin
from llama_operator.planning import documents, plan, resolve_pool

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_examples_parse() -> None:
    jobs, pools = documents.load([EXAMPLES])
    assert {j.metadata.name for j in jobs} == {
        "finetune-llama3-8b",
        "finetune-llama3-8b-neuron",
        "pretrain-llama3-1b",
        "probe-llama3-8b",
        "serve-llama3-70b",
        "tiny-cpu",
    }
    assert len(pools) == len(list((EXAMPLES / "pools").glob("*.yaml")))
    for pool in pools:
        kind = resolve_pool(pool.spec, builtin())
        assert pool.spec.node_selector == {"llamaop.io/pool": pool.metadata.name}
        if kind.family != "cpu":
            assert [t.key for t in pool.spec.tolerations] == [kind.resource_name]


def test_every_example_job_is_placed_on_the_example_pools() -> None:
    jobs, pools = documents.load([EXAMPLES])
    inventory = documents.inventory(pools, builtin())
    decisions = {d.key: d for d in plan(documents.requests(jobs, NOW), inventory, now=NOW)}
    assert all(d.outcome == "placed" for d in decisions.values()), {
        k: d.message for k, d in decisions.items()
    }
    assert decisions["default/tiny-cpu"].family == "cpu"
    assert decisions["default/finetune-llama3-8b-neuron"].family == "neuron"
    assert decisions["default/serve-llama3-70b"].capacity_type != "spot"


def test_every_example_job_plans_on_the_builtin_catalog() -> None:
    jobs, _ = documents.load([EXAMPLES])
    inventory = documents.inventory(documents.catalog_pools(builtin()), builtin())
    for d in plan(documents.requests(jobs, NOW), inventory, now=NOW):
        assert d.outcome == "placed", d.message


def test_example_pools_match_the_local_cluster() -> None:
    """hack/cluster/pools.yaml builds the test cluster's nodes; the example pools must select them."""
    cluster = {
        p["name"]: p for p in yaml.safe_load((ROOT / "hack" / "cluster" / "pools.yaml").read_text())["pools"]
    }
    _, pools = documents.load([EXAMPLES / "pools"])
    for pool in pools:
        node = cluster[pool.metadata.name]
        assert (node["instanceType"], node["capacityType"]) == (
            pool.spec.instance_type,
            pool.spec.capacity_type,
        )
