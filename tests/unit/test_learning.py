"""Learning from finished jobs (planning/learning.py): one factor per pool, mode and precision."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_operator.api import AcceleratorPoolSpec, LearnedSpeed, LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import Inventory, JobRequest, NodeState, PoolState, learning, plan, resolve_pool
from llama_operator.planning.calibration import arch_of

pytestmark = pytest.mark.unit

CATALOG = builtin()
assert CATALOG.calibration is not None
CALIBRATION = CATALOG.calibration
NOW = datetime(2026, 6, 1, tzinfo=UTC)
TRN1 = AcceleratorPoolSpec(node_selector={"llamaop.io/pool": "trn1"}, instance_type="trn1.32xlarge")
RATIOS = st.floats(min_value=0.1, max_value=10.0)


def sample(
    preset: str = "llama3-8b", *, ratio: float = 1.0, nodes: int = 1, mode: str = "train"
) -> learning.Sample:
    """A trn1 job of `preset` that measured `ratio` x its calibrated speed."""
    base = learning.Sample(
        mode=mode,  # type: ignore[arg-type]
        precision="bf16",
        tokens_per_second=1.0,
        arch=arch_of(preset, CATALOG),
        devices_per_node=16,
        nodes=nodes,
        sequence_length=4096,
        max_batch=8,
        context_length=2048,
    )
    pool = resolve_pool(TRN1, CATALOG)
    expected = learning.predicted(base, pool, CALIBRATION, CATALOG.defaults.multi_node_efficiency_no_efa)
    return replace(base, tokens_per_second=expected * ratio)


def record(learned: list[LearnedSpeed], s: learning.Sample) -> list[LearnedSpeed]:
    out = learning.record(learned, s, TRN1, CATALOG, CALIBRATION, NOW)
    assert out is not None
    return out


@given(st.lists(RATIOS, min_size=1, max_size=8))
def test_the_factor_is_the_geometric_mean_with_the_calibration_as_one_run(ratios: list[float]) -> None:
    learned: list[LearnedSpeed] = []
    for r in ratios:
        learned = record(learned, sample(ratio=r))
    (entry,) = learned
    expected = math.exp(sum(math.log(r) for r in ratios) / (len(ratios) + learning.PRIOR_RUNS))
    assert entry.factor == pytest.approx(expected, rel=1e-4)
    assert entry.runs == len(ratios) and (entry.mode, entry.precision) == ("train", "bf16")
    # Order does not matter, and the factor always lies between 1 and the ratios.
    again: list[LearnedSpeed] = []
    for r in reversed(ratios):
        again = record(again, sample(ratio=r))
    assert again[0].factor == pytest.approx(entry.factor, rel=1e-4)
    assert min([1.0, *ratios]) * (1 - 1e-4) <= entry.factor <= max([1.0, *ratios]) * (1 + 1e-4)


@given(RATIOS)
def test_repeated_runs_converge_to_what_they_measure(ratio: float) -> None:
    learned: list[LearnedSpeed] = []
    for _ in range(60):
        learned = record(learned, sample(ratio=ratio))
    assert learned[0].factor == pytest.approx(ratio, rel=0.05)


@given(RATIOS)
def test_inference_runs_never_teach_training_speeds(ratio: float) -> None:
    learned = record([], sample(ratio=2.0))
    after = record(learned, sample(ratio=ratio, mode="inference"))
    train = [e for e in after if e.mode == "train"]
    assert train == learned
    assert any(e.mode == "inference" and e.runs == 1 for e in after)


def test_a_run_at_the_estimate_changes_nothing_and_nonsense_is_ignored() -> None:
    (entry,) = record([], sample(ratio=1.0))
    assert entry.factor == pytest.approx(1.0)
    assert learning.record([], sample(ratio=100.0), TRN1, CATALOG, CALIBRATION, NOW) is None
    stalled = learning.Sample("train", "bf16", 0.0, arch_of("tiny", CATALOG), 16, 1, 256)
    assert learning.record([], stalled, TRN1, CATALOG, CALIBRATION, NOW) is None


def _estimate(preset: str, learned: list[LearnedSpeed], nodes: int = 1) -> float:
    spec = LlamaJobSpec.model_validate(
        {
            "mode": "train",
            "model": {"preset": preset},
            # 2048: at 4096 the XLA line's attention scores no longer let 8B fit one trn1 node.
            "training": {"tokens": 10**9, "sequenceLength": 2048, "batchSize": 512},
            "resources": {"nodes": nodes, "devicesPerNode": 16},
        }
    )
    pool = PoolState(
        "trn1", TRN1, tuple(NodeState(f"n{i}", "trn1") for i in range(4)), learned=learning.factors(learned)
    )
    decision = plan([JobRequest("ns/j", spec, NOW)], Inventory((pool,)), now=NOW)[0]
    assert decision.outcome == "placed" and decision.est_tokens_per_second
    return decision.est_tokens_per_second


def test_what_8b_taught_on_trn1_moves_the_3b_estimate() -> None:
    # One node only: trn1 trains on the XLA line, whose capability row allows one node per job.
    learned = record([], sample("llama3-8b", ratio=0.5))
    factor = learned[0].factor
    for preset in ("llama3-8b", "llama3-3b"):
        assert _estimate(preset, learned) == pytest.approx(factor * _estimate(preset, []), rel=1e-6)
