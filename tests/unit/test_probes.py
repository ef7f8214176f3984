"""Probes: a training job measured on its best candidates before it is placed (lifecycle/probing.py,
planning/probes.py). The World applies the lifecycle's actions to a little in-memory cluster; the tests
write rank 0's progress annotation as the runtime would."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from llama_operator.lifecycle.actions import CreateWorkers, DeleteWorkers, PatchStatus, RecordThroughput
from llama_operator.lifecycle.status import dump, holds_nodes, job_cost
from llama_operator.workers.names import LABEL_ATTEMPT, LABEL_PROBE
from llama_runtime.progress import Measured
from tests.unit.lifecycle_fixtures import World, job, node, train_spec

PROBE = {"steps": 3, "warmupSteps": 1, "candidates": 3, "timeout": "10m"}


def cluster(**probe: Any) -> World:
    world = World([node("trn1", 0), node("p5", 0), node("cpu", 0)], ["trn1", "p5", "cpu"])
    world.add(job("j", train_spec(probe={**PROBE, **probe})))
    return world


def status(world: World) -> dict[str, Any]:
    return dump(world.jobs["ml/j"].status)


def probes(world: World) -> dict[str, dict[str, Any]]:
    return {p["pool"]: p for p in status(world).get("probes", [])}


def probe_pods(world: World, pool: str) -> list[dict[str, Any]]:
    attempt = str(probes(world)[pool]["attempt"])
    return [b for b in world.pods_of("j") if b["metadata"]["labels"][LABEL_ATTEMPT] == attempt]


def run(world: World, pool: str, phase: str = "Running", **extra: Any) -> None:
    for body in probe_pods(world, pool):
        terms = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        body["spec"]["nodeName"] = terms["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        body["status"] = {"phase": phase, **extra}


def measure(world: World, pool: str, rate: float, startup: float = 20.0, compiled: float = 5.0) -> None:
    """Rank 0 writes what the runtime writes once its measured steps are done."""
    (rank0,) = [b for b in probe_pods(world, pool) if b["metadata"]["labels"]["llamaop.io/rank"] == "0"]
    progress = {"step": 4, "totalSteps": 4, "loss": 5.0, "tokensPerSecond": rate, "startupSeconds": startup,
                "warmupSteps": 1, "compileSeconds": compiled, "measuredSteps": 3,
                "measuredTokensPerSecond": rate}  # fmt: skip
    rank0["metadata"].setdefault("annotations", {})["llamaop.io/progress"] = json.dumps(progress)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


def test_a_probe_decision_books_one_attempt_per_family_status_first_and_stays_queued() -> None:
    world = cluster()
    (result,) = world.step()
    kinds = [type(a).__name__ for a in result.actions]
    assert kinds[0] == "PatchStatus" and kinds.count("CreateWorkers") == 3
    st = status(world)
    assert st["phase"] == "Queued" and st["reason"] == "Probing"
    assert any(c["type"] == "Probing" and c["status"] == "True" for c in st["conditions"])
    found = probes(world)
    assert set(found) == {"trn1", "p5", "cpu"}  # one per family: neuron, nvidia, cpu
    assert sorted(p["attempt"] for p in found.values()) == [1, 2, 3] and st["attempts"] == 3
    assert all(p["phase"] == "Pending" and p["estimatedTokensPerSecond"] > 0 for p in found.values())
    assert {v["verdict"] for v in st["candidates"] if v["pool"] in found} == {"Probing"}
    for pool in found:
        (pod,) = probe_pods(world, pool)
        assert pod["metadata"]["labels"][LABEL_PROBE] == "true"
        env = env_of(pod)
        assert env["LLAMAOP_STEPS"] == "4" and env["LLAMAOP_MEASURE_AFTER"] == "1"
        assert not env.get("LLAMAOP_CHECKPOINT_DIR")  # a probe never touches the job's checkpoints
        assert all(v["name"] != "checkpoints" for v in pod["spec"].get("volumes", []))
    assert holds_nodes(world.jobs["ml/j"].status)


def test_probe_nodes_are_booked_so_no_other_job_takes_them() -> None:
    world = cluster()
    world.step()
    assert probes(world)["trn1"]["devicesPerNode"] == 1
    # The whole trn1 node: 1 of its 16 devices is the probe's, whose pod is not even bound yet.
    whole = {**train_spec(pools=["trn1"]), "resources": {"devicesPerNode": 16}}
    world.add(job("other", whole))
    world.step()
    other = dump(world.jobs["ml/other"].status)
    assert other["phase"] == "Queued" and not other.get("nodeNames")
    run(world, "trn1", "Failed")
    world.step()  # the probe ends and its pod goes: the node is free again
    world.step()
    assert dump(world.jobs["ml/other"].status)["phase"] == "Placed"


def test_a_busy_probing_job_keeps_its_probes_booked() -> None:
    """While the controller still creates a job's probe pods (the job is busy), their nodes stay booked."""
    world = cluster()
    world.step()
    world.pods.clear()  # the pods are not made yet: only the booking in status holds the nodes
    whole = {**train_spec(pools=["trn1"]), "resources": {"devicesPerNode": 16}}
    world.add(job("other", whole))
    world.step(busy=frozenset({"ml/j"}))
    assert dump(world.jobs["ml/other"].status)["phase"] == "Queued"


def test_pending_then_running_then_measured_charges_the_job_and_teaches_the_pool() -> None:
    world = cluster()
    world.step()
    assert probes(world)["cpu"]["phase"] == "Pending"
    run(world, "cpu")
    world.step()
    assert probes(world)["cpu"]["phase"] == "Running"
    measure(world, "cpu", rate=5000.0)
    results = world.step(timedelta(minutes=1))
    learned = [a for r in results for a in r.actions if isinstance(a, RecordThroughput)]
    assert [(a.pool, a.sample.tokens_per_second) for a in learned] == [("cpu", 5000.0)]
    assert learned[0].sample.nodes == 1 and learned[0].sample.sequence_length == 256
    cpu = probes(world)["cpu"]
    assert cpu["phase"] == "Measured" and cpu["measuredTokensPerSecond"] == 5000.0
    assert cpu["startupSeconds"] == 20.0 and cpu["compileSeconds"] == 5.0
    tokens = 200 * 256 * 64
    assert cpu["measuredHours"] == pytest.approx((tokens / 5000 + 25) / 3600, rel=1e-3)
    per_million = 0.4032 * cpu["measuredHours"] / tokens * 1e6  # start-up included, as the engine counts
    assert cpu["measuredCostPerMillionTokens"] == pytest.approx(per_million, rel=1e-2)
    # Charged: its price for the 65 s it held its node (created at +5 s, measured at +70 s).
    assert cpu["cost"] == pytest.approx(0.4032 * 65 / 3600, rel=1e-3)
    assert status(world)["accruedCost"] >= round(cpu["cost"], 4)
    assert not probe_pods(world, "cpu")  # its pods are deleted once measured


def test_the_job_is_placed_by_measured_cost_not_by_the_estimate() -> None:
    world = cluster()
    world.step()
    estimated = probes(world)
    assert min(estimated.values(), key=lambda p: p["estimatedCost"])["pool"] == "cpu"
    for pool, rate in (("cpu", 5000.0), ("trn1", 1_000_000.0), ("p5", 2_000_000.0)):
        run(world, pool)
        measure(world, pool, rate, startup=30.0, compiled=30.0)
    world.step(timedelta(minutes=2))
    assert {p["phase"] for p in probes(world).values()} == {"Measured"}
    world.step()
    st = status(world)
    assert st["phase"] == "Placed" and st["pool"] == "trn1"  # measured: cpu is slow, trn1 cheapest
    assert st["message"].startswith("by measured cost")
    assert st["attempts"] == 4  # after the probes' three attempts
    # A probe's measured cost is the planner's price of the job at the measured speed: what it chose by.
    rows = {c["pool"]: c for c in st["candidates"]}
    assert all(p["measuredCost"] == rows[p["pool"]]["cost"] for p in st["probes"])
    assert probes(world)["trn1"]["measuredCost"] == st["estimatedCost"]
    notes = {c["pool"]: c.get("note", "") for c in st["candidates"]}
    assert all("measured by probe" in notes[p] for p in ("cpu", "trn1", "p5"))
    assert any(c["type"] == "Probing" and c["status"] == "False" for c in st["conditions"])
    # What the probes cost stays in accruedCost after placement.
    spent = sum(p["cost"] for p in st["probes"])
    assert spent > 0 and st["accruedCost"] == pytest.approx(spent, abs=1e-4)


def test_a_failed_probe_rules_its_pool_out_but_never_fails_the_job() -> None:
    world = cluster()
    world.step()
    run(
        world,
        "trn1",
        "Failed",
        containerStatuses=[{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
    )
    for pool, rate in (("cpu", 5000.0), ("p5", 2_000_000.0)):
        run(world, pool)
        measure(world, pool, rate)
    world.step()
    trn1 = probes(world)["trn1"]
    assert trn1["phase"] == "Failed" and trn1["reason"] == "WorkerFailed"
    world.step()
    st = status(world)
    assert st["phase"] == "Placed" and st["pool"] == "p5"
    note = next(c["note"] for c in st["candidates"] if c["pool"] == "trn1")
    assert "ruled out by its probe" in note and "WorkerFailed" in note


def test_a_probe_past_its_timeout_is_stopped_and_its_pool_ruled_out() -> None:
    world = cluster(candidates=1, timeout="5m")
    world.step()
    run(world, "cpu")
    world.step(timedelta(minutes=4))
    assert probes(world)["cpu"]["phase"] == "Running"
    results = world.step(timedelta(minutes=2))
    cpu = probes(world)["cpu"]
    assert cpu["phase"] == "TimedOut" and cpu["reason"] == "Timeout"
    assert any(isinstance(a, DeleteWorkers) for r in results for a in r.actions)
    assert cpu["cost"] == pytest.approx(0.4032 * 6 / 60, rel=1e-3)  # charged for the whole 6 minutes


def test_all_probes_failed_places_the_job_by_estimate_on_the_pools_left_and_says_so() -> None:
    world = cluster(candidates=1)
    world.step()
    run(world, "cpu", "Failed")
    world.step()
    world.step()
    st = status(world)
    assert st["phase"] == "Placed" and st["pool"] in ("trn1", "p5")
    assert st["message"].startswith("by estimate (no probe measured a speed)")


def test_all_probes_failed_with_on_all_failed_fail_fails_the_job_with_the_reason() -> None:
    world = cluster(candidates=1, onAllFailed="fail")
    world.step()
    run(world, "cpu", "Failed")
    world.step()
    st = status(world)
    assert st["phase"] == "Failed" and st["reason"] == "ProbesFailed"
    assert "cpu: WorkerFailed" in st["message"]


def test_every_pool_ruled_out_rejects_the_job_with_probes_failed() -> None:
    world = cluster(candidates=3)
    world.step()
    for pool in ("cpu", "trn1", "p5"):
        run(world, pool, "Failed")
    world.step()
    world.step()
    st = status(world)
    assert st["phase"] == "Failed" and st["reason"] == "ProbesFailed"


def test_probes_are_stopped_at_probe_max_cost() -> None:
    world = cluster(candidates=1, maxCost=0.01)  # cpu's probe is estimated below it; $0.4032/h
    world.step()
    run(world, "cpu")
    world.step(timedelta(seconds=60))
    assert probes(world)["cpu"]["phase"] == "Running"
    world.step(timedelta(seconds=60))  # 2 min at $0.4032/h = $0.0134
    cpu = probes(world)["cpu"]
    assert cpu["phase"] == "TimedOut" and cpu["reason"] == "ProbeBudget"


def test_a_restart_after_the_status_write_re_creates_the_same_probe_pods_once() -> None:
    world = cluster()
    world.step()
    names = sorted(world.pods)
    world.pods.clear()
    world.created_at.clear()  # a new process: the probes are booked in status, their pods were never made
    results = world.step()
    creates = [a for r in results for a in r.actions if isinstance(a, CreateWorkers)]
    assert sorted(a.attempt for a in creates) == [1, 2, 3]
    assert sorted(world.pods) == names  # the same deterministic names: creating again is a no-op
    again = world.step()
    assert not [a for r in again for a in r.actions if isinstance(a, CreateWorkers)]
    assert status(world)["attempts"] == 3


def test_a_lesson_the_pool_has_not_shown_is_asked_again_and_one_it_has_never() -> None:
    """A SIGKILL right after a probe's result was written, before the pool's patch: the next process asks
    for the lesson again (the job is not placed yet), until the pool's learnedFrom shows the probe's sample
    id; the controller learns a sample id once (controller/state.py)."""
    from llama_operator.api import AcceleratorPoolStatus

    world = cluster(candidates=1)
    world.step()
    run(world, "cpu")
    measure(world, "cpu", 5000.0)
    (result,) = world.step()
    first = result.actions[0]
    assert isinstance(first, PatchStatus) and first.status["probes"][0]["phase"] == "Measured"
    lesson = next(a for a in result.actions if isinstance(a, RecordThroughput))
    assert lesson.sample_id == "uid-j/a1"

    def restarted() -> list[RecordThroughput]:
        """Only the probes' result was written when the process died; a new one makes a pass."""
        world.jobs["ml/j"] = job("j", dict(world.jobs["ml/j"].raw_spec), dict(first.status))
        world.created_at.clear()
        return [a for r in world.step() for a in r.actions if isinstance(a, RecordThroughput)]

    assert [a.sample_id for a in restarted()] == ["uid-j/a1"]
    world.pools["cpu"] = world.pools["cpu"].model_copy(
        update={"status": AcceleratorPoolStatus(learned_from=["uid-j/a1"])}
    )
    assert restarted() == []


def test_a_measured_result_is_written_before_the_pods_go() -> None:
    world = cluster(candidates=1)
    world.step()
    run(world, "cpu")
    measure(world, "cpu", 5000.0)
    (result,) = world.step()
    kinds = [type(a) for a in result.actions]
    assert kinds[0] is PatchStatus  # durable first: a crash after it keeps the result
    assert kinds.index(DeleteWorkers) > 0
    written = result.actions[0]
    assert isinstance(written, PatchStatus)
    assert written.status["probes"][0]["phase"] == "Measured"


def test_suspending_while_probing_stops_the_probes_and_resuming_probes_again() -> None:
    world = cluster(candidates=1)
    world.step()
    spec = {**train_spec(probe={**PROBE, "candidates": 1}), "suspend": True}
    world.jobs["ml/j"] = job("j", spec, status(world), generation=2)
    world.step(timedelta(minutes=1))
    st = status(world)
    assert st["phase"] == "Suspended" and st["probes"][0]["reason"] == "Stopped"
    assert not world.pods_of("j") and not holds_nodes(world.jobs["ml/j"].status)
    world.jobs["ml/j"] = job("j", train_spec(probe={**PROBE, "candidates": 1}), st, generation=3)
    world.step()
    world.step()
    st = status(world)
    assert st["phase"] == "Queued" and [p["phase"] for p in st["probes"]] == ["Failed", "Pending"]
    # Both rounds are charged.
    assert job_cost(world.jobs["ml/j"].status, world.now) >= st["probes"][0]["cost"]


def test_a_job_without_room_for_any_probe_is_placed_unprobed_with_the_reason() -> None:
    world = World([node("cpu", 0)], ["cpu"])
    world.add(job("j", train_spec(probe={**PROBE, "maxCost": 0.000001})))
    world.step()
    st = status(world)
    assert (
        st["phase"] == "Placed"
        and "not probed: every probe is estimated above probe.maxCost" in st["message"]
    )
    assert not st.get("probes")


def test_the_runtime_times_warm_up_apart_from_the_measured_steps() -> None:
    m = Measured(startup_seconds=12.5, warmup_steps=2, warmup_seconds=10.0, steps=4, seconds=2.0,
                 tokens_per_step=1000)  # fmt: skip
    assert m.tokens_per_second == pytest.approx(2000.0)
    assert m.compile_seconds == pytest.approx(10.0 - 2 * 0.5)
    fields = m.fields()
    assert fields["measuredSteps"] == 4 and fields["warmupSteps"] == 2 and fields["startupSeconds"] == 12.5
    assert Measured(0.0, 1, 1.0, 0, 0.0, 1000).tokens_per_second is None
