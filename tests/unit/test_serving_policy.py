"""`cheapest` for inference: least $/h among options that meet the throughput target and the per-sequence
decode floor (inference.minTokensPerSecondPerSequence), shown per candidate."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_operator.api import LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import Decision, JobRequest, documents, plan

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = builtin()


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return doc["spec"]


def decide(spec: dict[str, Any], pools: str | None = None) -> Decision:
    states = documents.catalog_pools(CATALOG) if pools is None else documents.load([ROOT / pools])[1]
    inventory = documents.inventory(states, CATALOG, nodes_per_pool=4)
    return plan([JobRequest("ns/serve", LlamaJobSpec.model_validate(spec), NOW)], inventory, now=NOW)[0]


@pytest.mark.parametrize("pools", [None, "examples/pools"])
def test_70b_serving_by_default_does_not_land_on_cpu(pools: str | None) -> None:
    spec = example("serve-llama3-70b.yaml")
    spec["placement"].pop("maxPricePerHour")  # cheapest, no target, no price cap: the case of issue 13
    d = decide(spec, pools)
    assert d.outcome == "placed" and d.family != "cpu"
    assert d.est_tokens_per_second_per_sequence is not None and d.est_tokens_per_second_per_sequence >= 10
    cpu = [c for c in d.candidates if c.family == "cpu"]
    assert all(c.verdict == "TooSlowPerSequence" for c in cpu if c.fits)
    # The runtime's engine serves fp32 on CPU (its capability row): 282 GB of 70B weights fit no CPU pool.
    assert all(c.verdict == "DoesNotFit" for c in cpu) and (cpu or pools is not None)


def test_every_usable_candidate_shows_its_speed_per_sequence_and_its_price_per_token() -> None:
    d = decide(example("serve-llama3-70b.yaml"))
    usable = [c for c in d.candidates if c.fits and c.tokens_per_second]
    assert usable
    for c in usable:
        assert c.tokens_per_second_per_sequence and c.cost_per_million_tokens
        # Total = per sequence x sequences in flight (2 replicas x maxBatch 16).
        assert c.tokens_per_second == pytest.approx(c.tokens_per_second_per_sequence * 2 * 16, rel=1e-6)
    status = d.to_status(now=NOW).candidates[0]
    assert status.tokens_per_second_per_sequence is not None


def test_cheapest_is_the_least_price_per_hour_among_options_above_the_floor() -> None:
    d = decide(example("serve-llama3-70b.yaml"))
    ok = [c for c in d.candidates if c.verdict in ("Chosen", "Costlier", "Slower")]
    chosen = next(c for c in ok if c.verdict == "Chosen")
    assert all(chosen.price_per_hour <= (c.price_per_hour or 0) + 1e-9 for c in ok)
    assert all((c.tokens_per_second_per_sequence or 0) >= 10 for c in ok)


def test_a_job_that_asks_for_cpu_or_no_floor_can_have_it() -> None:
    # 8B (70B no longer fits a CPU pool in the fp32 the CPU engine serves in).
    strict = example("serve-llama3-70b.yaml")
    strict["model"] = {"preset": "llama3-8b"}
    strict["resources"] = {"families": ["cpu"]}
    d = decide(strict)
    assert d.outcome == "rejected" and d.reason == "TooSlowPerSequence"
    assert "minTokensPerSecondPerSequence" in d.message
    strict["inference"]["minTokensPerSecondPerSequence"] = 0
    assert decide(strict).family == "cpu"  # once the floor is off


def test_a_higher_floor_or_a_target_moves_the_job_to_faster_hardware() -> None:
    base = decide(example("serve-llama3-70b.yaml"))
    spec = example("serve-llama3-70b.yaml")
    assert base.est_tokens_per_second is not None
    spec["inference"]["targetTokensPerSecond"] = base.est_tokens_per_second * 1.5
    faster = decide(spec)
    assert (
        faster.est_tokens_per_second is not None
        and faster.est_tokens_per_second >= spec["inference"]["targetTokensPerSecond"]
    )
    assert faster.pool != base.pool
