"""The simulator, its baselines and bound, and the trace format and generator."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llama_operator.api import LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import resolve_pool, simulator, trace, tracegen

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[2] / "hack" / "bench" / "traces" / "mixed-400-seed7.yaml"


def small(seed: int = 3, jobs: int = 40) -> trace.Trace:
    return tracegen.generate(seed=seed, jobs=jobs, days=1.0)


def test_generator_is_seeded() -> None:
    assert trace.dump(small(seed=3)) == trace.dump(small(seed=3))
    assert trace.dump(small(seed=3)) != trace.dump(small(seed=4))


def test_trace_round_trips_through_yaml(tmp_path: Path) -> None:
    original = small()
    path = tmp_path / "t.yaml"
    path.write_text(trace.dump(original))
    loaded = trace.load(path)
    assert loaded.start == original.start and [p.name for p in loaded.pools] == [
        p.name for p in original.pools
    ]
    assert [(j.name, j.spec, j.priority) for j in loaded.jobs] == [
        (j.name, j.spec, j.priority) for j in original.jobs
    ]
    assert [j.arrival for j in loaded.jobs] == pytest.approx([j.arrival for j in original.jobs], abs=1e-3)


def test_generated_deadlines_are_achievable_at_arrival() -> None:
    t = small(jobs=60)
    with_deadline = [j for j in t.jobs if j.spec.placement.deadline is not None]
    assert with_deadline
    bound = simulator.lower_bound(t)
    assert all(j.name in bound for j in with_deadline)


def test_simulation_accounts_for_every_job() -> None:
    t = small()
    result = simulator.simulate(t)
    assert result.completed + result.rejected + result.unfinished == len(t.jobs)
    assert result.unfinished == 0
    done = [j for j in result.jobs if j.outcome == "done"]
    assert all(j.cost > 0 and j.finish is not None and j.start is not None for j in done)
    arrivals = {j.name: j.arrival for j in t.jobs}
    assert all(j.start >= arrivals[j.name] for j in done if j.start is not None)
    assert 0 < result.utilisation <= 1
    assert result.total_cost == pytest.approx(sum(j.cost for j in done))


@pytest.mark.parametrize("ranking", simulator.RANKINGS)
def test_capacity_is_never_exceeded_in_the_simulation(ranking: simulator.Ranking) -> None:
    """Replayed from the results: at every start, the devices held on each node fit the node."""
    t = small(jobs=60)
    result = simulator.simulate(t, ranking=ranking)
    capacity = {
        f"{p.name}-{i}": resolve_pool(p.spec, builtin()).devices_per_node
        for p in t.pools
        for i in range(p.nodes)
    }
    done = [j for j in result.jobs if j.outcome == "done"]
    assert done
    for moment in {j.start for j in done}:
        held: Counter[str] = Counter()
        for j in done:
            if j.start is not None and j.finish is not None and j.start <= moment < j.finish:
                for node in j.node_names:
                    held[node] += j.devices_per_node
        assert all(held[node] <= capacity[node] for node in held), (moment, held)


def test_engine_beats_first_fit_and_stays_near_the_bound_when_capacity_is_loose() -> None:
    comparison = simulator.compare(small(jobs=60).scaled(8))
    ratios = comparison.ratios()
    assert ratios["vs first-fit"] < 1.0
    assert ratios["vs lower bound"] == pytest.approx(1.0, abs=0.05)
    engine = comparison.results["policy"]
    assert all(engine.deadline_misses <= r.deadline_misses for r in comparison.results.values())
    assert comparison.to_json()["comparedJobs"] == len(comparison.common())


def test_lower_bound_skips_jobs_that_fit_nowhere() -> None:
    t = small(jobs=5)
    impossible = LlamaJobSpec.model_validate(
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {"steps": 10},
            "placement": {"maxPricePerHour": 1e-6},
        }
    )
    extra = trace.TraceJob("never", 0.5, impossible)
    t = trace.Trace(t.name, t.start, t.pools, (*t.jobs, extra))
    assert "never" not in simulator.lower_bound(t)
    result = simulator.simulate(t)
    assert next(j for j in result.jobs if j.name == "never").outcome == "rejected"


def test_soonest_hours() -> None:
    spec = LlamaJobSpec.model_validate(
        {"mode": "train", "model": {"preset": "llama3-1b"}, "training": {"steps": 100}}
    )
    hours = simulator.soonest_hours(spec, tracegen.default_pools(), now=datetime(2026, 6, 1, tzinfo=UTC))
    assert hours is not None and 0 < hours < 10


def test_the_shipped_trace_loads() -> None:
    shipped = trace.load(SHIPPED)
    assert len(shipped.jobs) == 400 and len(shipped.pools) == len(tracegen.DEFAULT_POOLS)
