"""Passes scoped to what changed (lifecycle/changes.py): what gets replanned, what does not, and that a
scoped pass places exactly what a full pass over the same cluster would."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from llama_operator.lifecycle.actions import CreateWorkers, JobActions, PatchStatus
from llama_operator.lifecycle.changes import ChangeTracker
from llama_operator.lifecycle.snapshot import Snapshot, reconcile_all
from llama_operator.lifecycle.views import PodView, pod_view
from llama_operator.planning import Decision, Inventory, JobRequest, plan
from tests.unit.lifecycle_fixtures import OPTIONS, World, job, node, train_spec

pytestmark = pytest.mark.unit


class Tracked(World):
    """A World whose passes are scoped by a ChangeTracker. Like kopf's indexes, it hands a pass the same
    pod view objects until a pod really changes; every job the planner decides on is recorded."""

    def __init__(self, nodes: Sequence[Any], pools: Sequence[str], *, scoped: bool = True) -> None:
        super().__init__(nodes, pools)
        self.tracker = ChangeTracker(full_every=timedelta(seconds=60)) if scoped else None
        self.planned: list[list[str]] = []
        self._views: dict[str, tuple[dict[str, Any], PodView]] = {}

    def snapshot(self, busy: frozenset[str] = frozenset()) -> Snapshot:
        snap = super().snapshot(busy)
        pods: dict[str, list[PodView]] = {}
        for name, body in self.pods.items():
            cached = self._views.get(name)
            if cached is None or cached[0] != body:
                cached = (copy.deepcopy(body), pod_view(body))
                self._views[name] = cached
            view = cached[1]
            if view.key:
                pods.setdefault(view.key, []).append(view)
        object.__setattr__(snap, "pods", pods)
        return snap

    def planner(self, jobs: Sequence[JobRequest], inventory: Inventory, now: Any) -> list[Decision]:
        self.planned.append(sorted(j.key.partition("/")[2] for j in jobs))
        return plan(jobs, inventory, now=now, catalog=OPTIONS.catalog)

    def step(
        self, advance: timedelta = timedelta(seconds=5), busy: frozenset[str] = frozenset()
    ) -> list[JobActions]:
        self.now += advance
        self.planned.append([])  # this pass's planner calls follow
        snap = self.snapshot(busy)
        scope = self.tracker.scope(snap) if self.tracker else None
        results = reconcile_all(snap, self.options, self.planner, scope)
        if self.tracker and scope:
            self.tracker.record(snap, scope)
        for result in results:
            for action in result.actions:
                self._apply(result.key, action)
        return results

    def last_planned(self) -> list[str]:
        """Jobs the planner saw in the last pass (empty: it was not called)."""
        out = []
        for group in reversed(self.planned):
            if not group:
                break
            out = group + out
        return sorted(out)


def gpu_job(name: str, devices: int = 8, **extra: Any) -> Any:
    spec = train_spec()
    spec["resources"] = {"families": ["nvidia"], "devicesPerNode": devices}
    spec.update(extra)
    return job(name, spec)


def neuron_job(name: str) -> Any:
    spec = train_spec()
    spec["resources"] = {"families": ["neuron"], "devicesPerNode": 16}
    return job(name, spec)


def full_cluster() -> Tracked:
    """One p5 node (8 GPUs) and one trn1 node (16 Trainium), each taken by a running job; b waits for
    the GPUs, n for the Trainium."""
    world = Tracked([node("p5", 0), node("trn1", 0)], ["p5", "trn1"])
    world.add(gpu_job("a"))
    world.add(neuron_job("m"))
    world.step()
    world.set_pods("a", "Running")
    world.set_pods("m", "Running")
    world.add(gpu_job("b"))
    world.add(neuron_job("n"))
    world.step()
    world.step()
    assert phase(world, "a") == phase(world, "m") == "Running"
    assert phase(world, "b") == phase(world, "n") == "Queued"
    return world


def phase(world: World, name: str) -> str:
    return str(world.jobs[f"ml/{name}"].status.phase)


def test_a_pass_with_nothing_changed_plans_nothing_until_the_safety_pass() -> None:
    world = full_cluster()
    for _ in range(5):
        assert world.step() == []
        assert world.last_planned() == []
    world.step(advance=timedelta(seconds=60))  # the full pass replans every queued job
    assert world.last_planned() == ["b", "n"]
    world.step()
    assert world.last_planned() == []


def test_a_changed_job_is_replanned_alone() -> None:
    world = full_cluster()
    world.step()
    changed = copy.deepcopy(dict(world.jobs["ml/b"].raw_spec))
    changed["priority"] = 7
    world.jobs["ml/b"] = job("b", changed, status=_raw_status(world, "b"), generation=2)
    world.step()
    assert world.last_planned() == ["b"]


def test_a_new_job_is_planned_alone_when_no_capacity_grew() -> None:
    world = full_cluster()
    world.add(gpu_job("c"))
    world.step()
    assert world.last_planned() == ["c"]
    assert phase(world, "c") == "Queued"


def test_a_freed_node_replans_the_jobs_waiting_for_its_pool_and_only_those() -> None:
    world = full_cluster()
    world.set_pods("a", "Succeeded")
    world.step()  # a ends; b, waiting for the GPUs, is placed on the node a freed in the same pass
    assert phase(world, "a") == "Succeeded"
    assert world.last_planned() == ["b"]
    assert phase(world, "b") == "Placed"
    assert world.jobs["ml/b"].status.node_names == ["p5-0"]
    assert phase(world, "n") == "Queued"


def test_a_new_node_replans_the_jobs_waiting_for_its_pool() -> None:
    world = full_cluster()
    world.nodes["trn1-1"] = node("trn1", 1)
    world.step()
    assert world.last_planned() == ["n"]
    assert phase(world, "n") == "Placed"


def test_a_node_going_not_ready_reaches_the_job_running_on_it() -> None:
    world = full_cluster()
    world.nodes["p5-0"] = node("p5", 0, ready=False)
    results = world.step()
    assert {r.key for r in results} == {"ml/a"}
    assert phase(world, "a") == "Queued"  # failed over, waiting for another node
    assert world.jobs["ml/a"].status.reason == "NodeNotReady"


def test_a_job_that_was_busy_is_reconciled_once_it_is_not() -> None:
    world = full_cluster()
    world.set_pods("a", "Succeeded")
    world.step(busy=frozenset({"ml/a"}))  # its earlier actions are still being carried out
    assert phase(world, "a") == "Running"
    world.step()
    assert phase(world, "a") == "Succeeded"


def test_an_ended_cooldown_replans_the_jobs_waiting_for_the_pool() -> None:
    world = Tracked([node("p5", 0)], ["p5"])
    assert world.tracker is not None
    world.tracker.full_every = timedelta(hours=1)  # only the end of the cooldown can bring a back
    world.add(gpu_job("a"))
    world.step()
    world.set_pods("a", "Running")
    world.step()
    world.nodes["p5-0"] = node("p5", 0, ready=False)
    world.step()  # a fails over: p5 cools down for 10 minutes and a waits for it
    assert world.cooled == ["p5"]
    world.nodes["p5-0"] = node("p5", 0)
    world.step()
    assert phase(world, "a") == "Queued"
    assert world.jobs["ml/a"].status.reason in ("NodeNotReady", "CoolingDown", "NoCapacity")
    world.step()  # its Queued explanation, written by the last pass, is a change: replanned once
    until = world.pools["p5"].status.cooldown_until  # type: ignore[union-attr]
    while world.now + timedelta(seconds=60) < until:
        world.step(advance=timedelta(seconds=60))
        assert world.last_planned() == []
        assert phase(world, "a") == "Queued"
    world.step(advance=timedelta(seconds=60))
    assert world.last_planned() == ["a"]
    assert phase(world, "a") == "Placed"


def _raw_status(world: World, name: str) -> dict[str, Any]:
    from llama_operator.lifecycle.status import dump

    return dump(world.jobs[f"ml/{name}"].status)


def _placements(results: list[JobActions]) -> list[tuple[str, object]]:
    """What a pass decided beyond Queued explanations: non-Queued statuses and created workers."""
    out: list[tuple[str, object]] = []
    for result in results:
        for action in result.actions:
            if isinstance(action, PatchStatus) and action.status.get("phase") != "Queued":
                out.append(
                    (result.key, (action.status.get("phase"), tuple(action.status.get("nodeNames", ()))))
                )
            elif isinstance(action, CreateWorkers):
                out.append((result.key, "workers"))
    return sorted(out, key=repr)


def test_scoped_passes_decide_what_full_passes_decide() -> None:
    """The same events on two clusters, one scoped and one reconciled in full every pass."""
    nodes = [node("p5", 0), node("p5", 1), node("trn1", 0)]
    worlds = [Tracked(nodes, ["p5", "trn1"]), Tracked(nodes, ["p5", "trn1"], scoped=False)]
    events: list[Any] = [
        lambda w: [w.add(gpu_job(f"g{i}", devices=4)) for i in range(5)],
        lambda w: [w.add(neuron_job(f"n{i}")) for i in range(2)],
        lambda w: [w.set_pods(n, "Running") for n in ("g0", "g1", "g2", "g3", "n0")],
        lambda w: None,
        lambda w: w.set_pods("g1", "Succeeded"),
        lambda w: w.add(gpu_job("big", devices=8, priority=9)),
        lambda w: w.set_pods("g0", "Succeeded"),
        lambda w: w.nodes.update({"trn1-1": node("trn1", 1)}),
        lambda w: w.nodes.update({"p5-1": node("p5", 1, ready=False)}),
        lambda w: None,
        lambda w: w.set_pods("n0", "Failed"),
        lambda w: w.nodes.update({"p5-1": node("p5", 1)}),
        lambda w: None,
    ]
    for i, event in enumerate(events):
        decided = []
        for world in worlds:
            event(world)
            decided.append(_placements(world.step()))
            for name in list(world.jobs):
                if phase(world, name.partition("/")[2]) == "Placed":
                    world.set_pods(name.partition("/")[2], "Running")
        assert decided[0] == decided[1], f"after event {i}"
    phases = [{k: str(v.status.phase) for k, v in w.jobs.items()} for w in worlds]
    assert phases[0] == phases[1]
    assert sum(len(g) for g in worlds[0].planned) < sum(len(g) for g in worlds[1].planned)


@pytest.mark.parametrize("seed", range(6))
def test_scoped_passes_decide_what_full_passes_decide_on_random_events(seed: int) -> None:
    """Random arrivals, finishes, failures and node churn; the scoped cluster never has a safety pass."""
    rng = random.Random(seed)
    nodes = [node("p5", i) for i in range(2)] + [node("trn1", i) for i in range(2)]
    worlds = [Tracked(nodes, ["p5", "trn1"]), Tracked(nodes, ["p5", "trn1"], scoped=False)]
    assert worlds[0].tracker is not None
    worlds[0].tracker.full_every = timedelta(hours=1)
    for step in range(40):
        kind = rng.choice(["job", "job", "finish", "fail", "node", "none"])
        pick = rng.random()
        extra = rng.choice([1, 4, 8])
        for world in worlds:
            running = sorted(k for k, v in world.jobs.items() if v.status.phase == "Running")
            name = f"j{step}"
            if kind == "job":
                world.add(gpu_job(name, devices=extra) if pick < 0.6 else neuron_job(name))
            elif kind in ("finish", "fail") and running:
                target = running[int(pick * len(running))].partition("/")[2]
                world.set_pods(target, "Succeeded" if kind == "finish" else "Failed")
            elif kind == "node":
                victim = sorted(world.nodes)[int(pick * len(world.nodes))]
                pool, _, index = victim.partition("-")
                world.nodes[victim] = node(pool, int(index), ready=not world.nodes[victim].ready)
        advance = timedelta(seconds=rng.choice([1, 5, 20]))
        decided = [_placements(world.step(advance=advance)) for world in worlds]
        assert decided[0] == decided[1], f"seed {seed}, step {step} ({kind})"
        for world in worlds:
            for key, view in list(world.jobs.items()):
                if view.status.phase == "Placed":
                    world.set_pods(key.partition("/")[2], "Running")


def test_devices_promised_to_a_job_without_pods_come_back_when_it_stops() -> None:
    """A placed job whose pods never appeared holds its devices by its status alone; suspending it frees
    them with no pod event, and the job waiting for them is placed."""
    world = Tracked([node("p5", 0)], ["p5"])
    world.add(gpu_job("a"))
    world.step()
    world.pods.clear()  # the workers never show up
    world.add(gpu_job("b"))
    world.step()
    assert phase(world, "a") == "Placed"
    assert phase(world, "b") == "Queued"
    world.step()  # b's Queued status, written by the last pass, is a change
    world.step()
    assert world.last_planned() == []
    suspended = copy.deepcopy(dict(world.jobs["ml/a"].raw_spec))
    suspended["suspend"] = True
    world.jobs["ml/a"] = job("a", suspended, status=_raw_status(world, "a"), generation=2)
    world.step()
    assert phase(world, "a") == "Suspended"
    world.step()  # the Suspended status, written by the last pass, gives the devices back
    assert world.last_planned() == ["b"]
    assert phase(world, "b") == "Placed"
