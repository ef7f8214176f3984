"""The simulator, its baselines and bound, and the trace format and generator."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llama_operator.api import LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import resolve_pool, simulator, trace, tracegen, truth

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


def uniform(factor: float, t: trace.Trace, mode: str = "train") -> truth.Truth:
    """Every accelerator runs every model of `t` at `factor` x the estimate in `mode`."""
    models = {j.spec.model.preset or "custom" for j in t.jobs}
    factors = {(a, m, mode): factor for a in builtin().accelerators for m in models}
    return truth.Truth(f"x{factor}", factors)  # type: ignore[arg-type]


def test_engine_beats_first_fit_and_matches_the_oracle_when_the_model_is_right() -> None:
    comparison = simulator.compare(small(jobs=60).scaled(8))
    regret = comparison.regret()
    assert regret["engine"] == pytest.approx(1.0) and regret[simulator.ORACLE] == 1.0
    assert regret["engine"] < regret["first-fit"]
    assert regret["engine + learning"] == pytest.approx(1.0)  # nothing to learn: the truth is the prior
    engine = comparison.results["engine"]
    assert all(engine.deadline_misses <= r.deadline_misses for r in comparison.results.values())
    assert comparison.to_json()["comparedJobs"] == len(comparison.common())


def test_jobs_run_for_their_true_time_and_pay_their_true_cost() -> None:
    t = small(jobs=40).scaled(8)
    prior, slow = simulator.simulate(t), simulator.simulate(t, truth=uniform(0.5, t))
    by_name = {j.name: j for j in prior.jobs}
    startup = {p.name: resolve_pool(p.spec, builtin()).device.startup_minutes / 60 for p in t.pools}
    training = {j.name for j in t.jobs if j.spec.mode == "train"}
    checked = 0
    for j in slow.jobs:
        before = by_name[j.name]
        if j.outcome != "done" or before.outcome != "done" or j.pool != before.pool or j.name not in training:
            continue
        assert j.start is not None and j.finish is not None and before.start is not None and before.finish
        s = startup[j.pool or ""]
        # Half the speed: twice the compute time after startup, at the same price.
        assert j.finish - j.start == pytest.approx(s + 2 * (before.finish - before.start - s), rel=1e-6)
        assert j.estimated_cost == pytest.approx(before.cost, rel=1e-6) and j.cost > j.estimated_cost
        checked += 1
    assert checked > 5
    assert slow.total_cost > prior.total_cost


def test_learning_recovers_a_wrong_prior_and_the_oracle_knows_it() -> None:
    t = small(seed=5, jobs=60).scaled(8)
    real = uniform(0.5, t)
    comparison = simulator.compare(t, truth=real)
    without, learned = comparison.results["engine"], comparison.results["engine + learning"]
    oracle = comparison.results[simulator.ORACLE]
    training = {j.name for j in t.jobs if j.spec.mode == "train"}

    def estimate_error(result: simulator.SimResult) -> float:
        done = [j for j in result.jobs if j.outcome == "done" and j.name in training]
        return sum(abs(j.cost / j.estimated_cost - 1) for j in done) / len(done)

    # Without learning every estimate is off by the truth; finished jobs correct the later ones.
    assert estimate_error(without) > 0.5
    assert estimate_error(learned) < 0.5 * estimate_error(without)
    assert estimate_error(oracle) < 1e-6
    # What better estimates buy: deadlines that are met.
    assert learned.deadline_misses <= without.deadline_misses
    assert oracle.deadline_misses <= without.deadline_misses


def test_serving_below_the_floor_at_the_true_speed_is_a_service_level_miss() -> None:
    t = small(seed=2, jobs=40)
    serving = [j for j in t.jobs if j.spec.mode == "inference"]
    assert serving
    assert simulator.simulate(t).service_level_misses == 0
    crawl = simulator.simulate(t, truth=uniform(0.01, t, mode="inference"))
    assert crawl.service_level_misses == sum(
        1 for j in crawl.jobs if j.outcome == "done" and j.name in {s.name for s in serving}
    )
    assert crawl.service_level_misses > 0


def test_truth_files_round_trip_and_generated_factors_stay_within_the_spread(tmp_path: Path) -> None:
    real = truth.generate(["h100", "trainium1"], ["llama3-8b", "tiny"], seed=9)
    assert len(real.factors) == 2 * 2 * 2
    assert all(1 / truth.SPREAD <= f <= truth.SPREAD for f in real.factors.values())
    assert truth.generate(["h100"], ["tiny"], seed=9) != truth.generate(["h100"], ["tiny"], seed=10)
    path = tmp_path / "truth.yaml"
    path.write_text(truth.dump(real))
    assert truth.load(path) == real
    assert real.factor("a10g", "tiny", "train") == 1.0  # not in the truth: runs as estimated
    with pytest.raises(ValueError, match="factor"):
        truth.parse({"factors": [{"accelerator": "h100", "model": "tiny", "mode": "train", "factor": 0}]})


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
