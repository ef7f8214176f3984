"""The job state machine, driven through whole passes over a small fake cluster (no Kubernetes)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from llama_operator.api import ModelSpec
from llama_operator.lifecycle.actions import (
    CoolDownPool,
    CreateWorkers,
    JobActions,
    PatchStatus,
    RecordEvent,
    RecordThroughput,
)
from llama_operator.lifecycle.status import accrued_cost
from llama_operator.planning.llama import shape_of
from tests.unit.lifecycle_fixtures import World, job, node, train_spec

pytestmark = pytest.mark.unit


def cluster(trn1_nodes: int = 2, cpu_nodes: int = 0) -> World:
    nodes = [node("trn1", i) for i in range(trn1_nodes)] + [node("cpu", i) for i in range(cpu_nodes)]
    pools = ["trn1"] + (["cpu"] if cpu_nodes else [])
    return World(nodes, pools)


def neuron_job(name: str = "a", **placement: object) -> object:
    spec = train_spec(**placement)
    spec["resources"] = {"families": ["neuron"], "devicesPerNode": 16, "nodes": 1}
    return job(name, spec)


def status(world: World, name: str = "a") -> dict:
    from llama_operator.lifecycle.status import dump

    return dump(world.jobs[f"ml/{name}"].status)


def test_a_new_job_is_queued_then_placed_with_its_status_written_before_its_workers() -> None:
    world = cluster()
    world.add(neuron_job())
    (result,) = world.step()
    kinds = [type(a).__name__ for a in result.actions]
    assert kinds.index("PatchStatus") < kinds.index("CreateWorkers")
    st = status(world)
    assert st["phase"] == "Placed"
    assert st["pool"] == "trn1"
    assert st["attempts"] == 1
    assert st["nodeNames"] in (["trn1-0"], ["trn1-1"])
    assert st["placements"][0]["pricePerHour"] == pytest.approx(21.5)
    assert any(c["verdict"] == "Chosen" for c in st["candidates"])
    pods = world.pods_of("a")
    assert len(pods) == 1
    limits = pods[0]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["aws.amazon.com/neuron"] == "16"


def test_a_placed_job_turns_running_with_one_status_write_and_no_event() -> None:
    world = cluster(cpu_nodes=1)
    world.add(neuron_job())
    (placed,) = world.step()
    assert [a.reason for a in placed.actions if isinstance(a, RecordEvent)] == ["Placed"]
    world.set_pods("a", "Running")
    (running,) = world.step()
    # The phase and the condition say it; an Event per job would be one more request in a burst.
    assert [type(a).__name__ for a in running.actions] == ["PatchStatus"]
    st = status(world)
    assert st["phase"] == "Running" and st["reason"] == "WorkersRunning"
    # The status names the pools the job accepts: a neuron job's has no row for the cpu pool.
    assert [c["pool"] for c in st["candidates"]] == ["trn1"]


def test_devices_are_never_promised_twice_and_a_queued_job_waits_with_a_reason() -> None:
    world = cluster(trn1_nodes=2)
    for name in ("a", "b", "c"):
        world.add(neuron_job(name))
    world.step()
    phases = {n: status(world, n)["phase"] for n in "abc"}
    assert sorted(phases.values()) == ["Placed", "Placed", "Queued"]
    placed_nodes = [status(world, n)["nodeNames"][0] for n in "abc" if phases[n] == "Placed"]
    assert len(set(placed_nodes)) == 2
    waiting = next(n for n in "abc" if phases[n] == "Queued")
    assert status(world, waiting)["reason"] == "NoCapacity"
    # The next pass sees the placed jobs' bookings and still does not place the third.
    world.step()
    assert status(world, waiting)["phase"] == "Queued"
    # Freeing a node (a job finishing) places the queued one.
    done = next(n for n in "abc" if phases[n] == "Placed")
    world.set_pods(done, "Succeeded")
    world.step()
    assert status(world, done)["phase"] == "Succeeded"
    world.step()
    assert status(world, waiting)["phase"] == "Placed"


def test_running_then_succeeded_with_progress_copied_from_rank_zero() -> None:
    world = cluster()
    world.add(neuron_job())
    world.step()
    world.set_pods("a", "Running", conditions=[{"type": "Ready", "status": "True"}])
    pod = world.pods_of("a")[0]
    pod["metadata"].setdefault("annotations", {})["llamaop.io/progress"] = (
        '{"step": 50, "totalSteps": 200, "loss": 2.5, "tokensPerSecond": 1234.5}'
    )
    world.step()
    st = status(world)
    assert st["phase"] == "Running"
    assert st["progress"]["step"] == 50
    assert st["progress"]["percent"] == 25
    assert st["startTime"]
    world.set_pods("a", "Succeeded")
    results = world.step(timedelta(hours=1))
    learned = [a for r in results for a in r.actions if isinstance(a, RecordThroughput)]
    assert [a.pool for a in learned] == ["trn1"]
    sample = learned[0].sample
    assert (sample.mode, sample.precision, sample.tokens_per_second) == ("train", "bf16", 1234.5)
    assert (sample.nodes, sample.devices_per_node) == (st["nodes"], st["devicesPerNode"])
    assert sample.arch.parameters == shape_of(ModelSpec(preset="tiny")).parameters
    st = status(world)
    assert st["phase"] == "Succeeded"
    assert st["placements"][-1]["outcome"] == "Succeeded"
    # Placed at +5 s, finished at +3610 s: 3605 s on a $21.50/h node.
    assert st["accruedCost"] == pytest.approx(21.5 * 3605 / 3600, rel=1e-4)


def test_a_failed_worker_is_retried_then_the_job_fails_at_the_backoff_limit() -> None:
    world = cluster()
    world.add(neuron_job())  # backoffLimit 2
    world.step()
    for attempt in (1, 2, 3):
        assert status(world)["attempts"] == attempt
        world.set_pods("a", "Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 1}}}])
        results = world.step()
        if attempt < 3:
            assert status(world)["phase"] == "Queued"
            assert status(world)["reason"] == "WorkerFailed"
            assert not any(isinstance(a, CoolDownPool) for r in results for a in r.actions)
            world.step()  # placed again
            assert status(world)["phase"] == "Placed"
    st = status(world)
    assert st["phase"] == "Failed"
    assert st["reason"] == "BackoffLimitExceeded"
    assert [p["outcome"] for p in st["placements"]] == ["WorkerFailed"] * 3


def test_a_node_going_not_ready_fails_the_job_over_to_another_pool_and_cools_the_pool() -> None:
    world = World([node("trn1", 0), node("cpu", 0)], ["trn1", "cpu"])
    spec = train_spec()
    spec["resources"] = {"families": ["neuron", "cpu"]}
    spec["placement"]["pools"] = []
    world.add(job("a", spec))
    world.step()
    first = status(world)["pool"]
    failed_node = status(world)["nodeNames"][0]
    world.nodes[failed_node] = node(first, 0, ready=False)
    results = world.step()
    assert status(world)["reason"] == "NodeNotReady"
    assert any(isinstance(a, CoolDownPool) and a.pool == first for r in results for a in r.actions)
    world.step()
    st = status(world)
    assert st["phase"] == "Placed"
    assert st["pool"] != first
    assert st["attempts"] == 2
    assert [p["pool"] for p in st["placements"]] == [first, st["pool"]]


def test_pods_pending_past_the_timeout_move_the_job() -> None:
    world = cluster()
    world.add(neuron_job())
    world.step()
    world.step(timedelta(seconds=60))
    assert status(world)["phase"] == "Placed"
    world.step(timedelta(seconds=70))
    assert status(world)["reason"] == "PendingTimeout"
    assert world.cooled == ["trn1"]


def test_a_busy_job_keeps_its_devices_and_gets_no_actions_until_done() -> None:
    """While the controller still carries out a job's earlier actions, a pass must neither act on it nor
    hand its devices to another job, even when the job's own state would release them."""
    world = cluster(trn1_nodes=1)
    world.add(neuron_job("a"))
    world.step()
    world.add(neuron_job("c"))
    world.step()
    assert (status(world, "a")["phase"], status(world, "c")["phase"]) == ("Placed", "Queued")
    results = world.step(timedelta(seconds=130), busy=frozenset({"ml/a"}))  # a's pods are past pendingTimeout
    assert not [r for r in results if r.key == "ml/a"]
    assert (status(world, "a")["phase"], status(world, "c")["phase"]) == ("Placed", "Queued")
    # Done, it is handled as usual: it fails over and frees the node.
    world.step()
    assert status(world, "a")["reason"] == "PendingTimeout"


def test_suspend_removes_the_workers_and_resume_queues_again() -> None:
    world = cluster()
    world.add(neuron_job())
    world.step()
    assert world.pods_of("a")
    spec = dict(world.jobs["ml/a"].raw_spec, suspend=True)
    world.jobs["ml/a"] = job("a", spec, status(world), generation=2)
    world.step()
    assert status(world)["phase"] == "Suspended"
    assert not world.pods_of("a")
    spec["suspend"] = False
    world.jobs["ml/a"] = job("a", spec, status(world), generation=3)
    world.step()
    assert status(world)["phase"] == "Placed"
    assert status(world)["placements"][0]["outcome"] == "Suspended"


def test_a_spec_that_slipped_past_the_schema_fails_with_the_reason() -> None:
    world = cluster()
    world.add(job("bad", {"mode": "train", "model": {"preset": "llama9-huge"}}))
    (result,) = world.step()
    st = status(world, "bad")
    assert st["phase"] == "Failed"
    assert st["reason"] == "InvalidSpec"
    assert "model" in st["message"]
    assert any(isinstance(a, RecordEvent) and a.type == "Warning" for a in result.actions)


def test_a_job_no_pool_can_hold_is_rejected_not_queued() -> None:
    world = cluster()
    spec = train_spec()
    spec["model"] = {"preset": "llama3-70b"}
    spec["resources"] = {"families": ["neuron"], "devicesPerNode": 1, "nodes": 1}
    world.add(job("huge", spec))
    world.step()
    st = status(world, "huge")
    assert st["phase"] == "Failed"
    assert st["reason"] != "NoCapacity"


def test_changing_a_running_training_spec_is_refused_in_status() -> None:
    world = cluster()
    world.add(neuron_job())
    world.step()
    world.set_pods("a", "Running")
    world.step()
    spec = dict(world.jobs["ml/a"].raw_spec, priority=5)
    world.jobs["ml/a"] = job("a", spec, status(world), generation=2)
    results = world.step()
    st = status(world)
    assert st["phase"] == "Running"
    refused = [c for c in st["conditions"] if c["type"] == "SpecChangeRefused"]
    assert refused and refused[0]["status"] == "True"
    # Said once per generation, not on every pass.
    assert any(isinstance(a, PatchStatus) for r in results for a in r.actions)
    assert not world.step(timedelta(seconds=1))


def test_an_inference_spec_change_re_places_without_using_a_retry() -> None:
    world = cluster()
    spec = {
        "mode": "inference",
        "model": {"preset": "tiny"},
        "inference": {"replicas": 1},
        "resources": {"families": ["neuron"]},
    }
    world.add(job("srv", spec))
    world.step()
    world.set_pods("srv", "Running", conditions=[{"type": "Ready", "status": "True"}])
    world.step()
    assert status(world, "srv")["phase"] == "Running"
    spec = {**spec, "inference": {"replicas": 2}}
    world.jobs["ml/srv"] = job("srv", spec, status(world, "srv"), generation=2)
    world.step()
    world.step()
    st = status(world, "srv")
    assert st["phase"] == "Placed"
    assert st["nodes"] == 2
    assert st["placements"][0]["outcome"] == "SpecChanged"
    assert len(world.pods_of("srv")) == 2


def test_workers_lost_after_creation_are_retried_without_cooling_the_pool() -> None:
    world = cluster()
    world.add(neuron_job())
    world.step()
    world.set_pods("a", "Running")
    world.step()
    world.pods.clear()
    world.step(timedelta(seconds=30))
    assert status(world)["reason"] == "WorkerLost"
    assert world.cooled == []
    world.step()
    assert status(world)["phase"] == "Placed"
    assert status(world)["pool"] == "trn1"


def test_workers_not_seen_yet_are_not_lost_and_time_out_if_they_never_appear() -> None:
    """A lagging pod watch must not make just-created workers look lost; pods that never show up at all
    end the attempt at pendingTimeout."""
    world = cluster()
    world.add(neuron_job())
    world.step()
    world.pods.clear()  # created, but not (yet) in the watch
    world.step(timedelta(seconds=60))
    assert status(world)["phase"] == "Placed"
    world.step(timedelta(seconds=70))
    st = status(world)
    assert (st["phase"], st["reason"]) == ("Queued", "PendingTimeout")
    assert "never appeared" in st["message"]


def test_devices_of_workers_still_going_away_are_not_placed_on() -> None:
    world = cluster(trn1_nodes=1)
    world.add(neuron_job("old"))
    world.step()
    world.set_pods("old", "Running")
    del world.jobs["ml/old"]  # deleted; the garbage collector has not removed its pod yet
    world.add(neuron_job("new"))
    world.step()
    assert (status(world, "new")["phase"], status(world, "new")["reason"]) == ("Queued", "NoCapacity")
    world.pods.clear()
    world.step(timedelta(seconds=30))
    assert status(world, "new")["phase"] == "Placed"


def test_a_restarted_operator_re_creates_workers_missing_for_a_placed_job() -> None:
    world = cluster()
    world.add(neuron_job())
    world.step()
    world.pods.clear()
    world.created_at.clear()  # a new process: it did not create this attempt's workers
    results = world.step()
    creates = [a for r in results for a in r.actions if isinstance(a, CreateWorkers)]
    assert len(creates) == 1
    assert world.pods_of("a")
    assert status(world)["phase"] == "Placed"


def test_accrued_cost_sums_every_attempt() -> None:
    from datetime import UTC, datetime

    from llama_operator.api import PlacementRecord

    t = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        PlacementRecord(pool="a", time=t, price_per_hour=10, ended=t + timedelta(minutes=30)),
        PlacementRecord(pool="b", time=t + timedelta(hours=1), price_per_hour=2),
    ]
    assert accrued_cost(history, t + timedelta(hours=3)) == pytest.approx(5 + 4)


def test_pool_status_counts_ready_nodes_and_free_devices_net_of_bookings() -> None:
    from llama_operator.lifecycle.snapshot import build_inventory, pool_statuses
    from tests.unit.lifecycle_fixtures import OPTIONS

    world = World([node("trn1", 0), node("trn1", 1), node("trn1", 2, ready=False)], ["trn1"])
    world.add(neuron_job())
    world.step()
    snap = world.snapshot()
    inventory = build_inventory(snap, OPTIONS.catalog, list(snap.jobs.values()))
    st = pool_statuses(inventory, OPTIONS.catalog, snap.now)["trn1"]
    assert (st["nodes"], st["readyNodes"]) == (3, 2)
    assert (st["allocatableDevices"], st["allocatedDevices"], st["freeDevices"]) == (32, 16, 16)
    assert st["pricePerNodeHour"] == 21.5


def test_cpu_training_ranks_share_a_node_while_accelerator_ranks_never_do() -> None:
    world = World([node("cpu", 0), node("trn1", 0)], ["cpu", "trn1"])
    for name, families, devices in (("c", ["cpu"], 1), ("n", ["neuron"], 16)):
        spec = train_spec()
        spec["resources"] = {"families": families, "devicesPerNode": devices, "nodes": 2}
        world.add(job(name, spec))
    world.step()
    assert status(world, "c")["nodeNames"] == ["cpu-0", "cpu-0"]
    assert len(world.pods_of("c")) == 2
    assert status(world, "n")["phase"] == "Failed"  # one trn1 node can never hold a 2-node gang


def running_cpu_jobs(count: int) -> World:
    world = World([node("cpu", i) for i in range(count)], ["cpu"])
    for i in range(count):
        spec = train_spec()
        spec["resources"] = {"families": ["cpu"], "devicesPerNode": 1}
        world.add(job(f"j{i:02d}", spec))
    world.step()
    for i in range(count):
        world.set_pods(f"j{i:02d}", "Running")
    world.step()
    assert {status(world, f"j{i:02d}")["phase"] for i in range(count)} == {"Running"}
    return world


def cost_refreshes(results: list[JobActions]) -> int:
    patches = [a for r in results for a in r.actions if isinstance(a, PatchStatus)]
    assert all(a.status["phase"] == "Running" and a.status["accruedCost"] > 0 for a in patches)
    return len(patches)


def test_accrued_cost_refreshes_are_spread_after_a_restart() -> None:
    world = running_cpu_jobs(25)
    world.cost_at.clear()  # a restarted operator has written nothing yet: every job is due at once
    assert cost_refreshes(world.step(timedelta(minutes=1))) == 10
    assert [cost_refreshes(world.step(timedelta(seconds=1))) for _ in range(3)] == [10, 5, 0]


def test_a_large_cluster_refreshes_accrued_cost_less_often() -> None:
    world = running_cpu_jobs(25)
    world.options = replace(world.options, cost_writes_per_second=0.1)  # 25 jobs: every 250 s, not 60 s
    world.step(timedelta(seconds=250))
    world.step(timedelta(seconds=1))
    world.step(timedelta(seconds=1))  # all 25 refreshed, 10 per pass
    assert cost_refreshes(world.step(timedelta(seconds=120))) == 0
    assert cost_refreshes(world.step(timedelta(seconds=130))) == 10
