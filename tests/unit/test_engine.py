"""The placement engine, rule by rule."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llama_operator.api import AcceleratorPoolSpec, LlamaJobSpec, LlamaJobStatus, Phase
from llama_operator.planning import Decision, Inventory, JobRequest, NodeState, Planner, PoolState, plan
from llama_operator.planning.decision import STATUS_HISTORY

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)

# name: (instance type, capacity type, price per node-hour or None for the catalog's)
POOLS: dict[str, tuple[str, str, float | None]] = {
    "trn1": ("trn1.32xlarge", "on-demand", None),
    "trn2": ("trn2.48xlarge", "reserved", 36.0),
    "inf2": ("inf2.48xlarge", "on-demand", None),
    "p5": ("p5.48xlarge", "spot", 22.0),
    "p4d": ("p4d.24xlarge", "on-demand", None),
    "g5": ("g5.12xlarge", "spot", 2.27),
    "cpu": ("m7i.8xlarge", "on-demand", None),
}
DEVICES = {"trn1": 16, "trn2": 16, "inf2": 12, "p5": 8, "p4d": 8, "g5": 4, "cpu": 4}


def pool(name: str, nodes: int = 2, *, used: tuple[int, ...] = (), **spec: Any) -> PoolState:
    itype, capacity, price = POOLS[name]
    fields: dict[str, Any] = {"nodeSelector": {"llamaop.io/pool": name}, "instanceType": itype}
    fields["capacityType"] = capacity
    if price is not None:
        fields["pricePerNodeHour"] = price
    fields.update(spec)
    states = tuple(
        NodeState(f"{name}-{i}", name, used_devices=used[i] if i < len(used) else 0) for i in range(nodes)
    )
    return PoolState(name, AcceleratorPoolSpec.model_validate(fields), states)


def inventory(*pools: PoolState, promised: dict[str, int] | None = None) -> Inventory:
    return Inventory(pools or tuple(pool(name) for name in POOLS), promised or {})


def train(preset: str = "llama3-8b", *, steps: int = 500, batch: int = 64, **sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": "train",
        "model": {"preset": preset},
        "training": {"steps": steps, "batchSize": batch},
    }
    spec.update(sections)
    return spec


def serve(preset: str = "llama3-8b", **inference: Any) -> dict[str, Any]:
    return {"mode": "inference", "model": {"preset": preset}, "inference": inference}


def job(key: str, spec: dict[str, Any], *, age_min: float = 0, **kw: Any) -> JobRequest:
    return JobRequest(f"ns/{key}", LlamaJobSpec.model_validate(spec), NOW - timedelta(minutes=age_min), **kw)


def decide(spec: dict[str, Any], inv: Inventory | None = None, **kw: Any) -> Decision:
    return plan([job("j", spec, **kw)], inv or inventory(), now=NOW)[0]


def available(d: Decision) -> list[Any]:
    return [c for c in d.candidates if c.available_now]


# ------------------------------------------------------------------ choosing


def test_cheapest_pool_wins_and_every_other_candidate_says_why() -> None:
    d = decide(train())
    assert d.outcome == "placed" and d.reason == "Placed"
    chosen = d.candidates[0]
    assert chosen.verdict == "Chosen" and chosen.pool == d.pool
    assert d.est_cost == pytest.approx(min(c.cost for c in available(d)))
    assert {c.verdict for c in d.candidates[1:]} <= {
        "Costlier",
        "DoesNotFit",
        "ExceedsMaxCost",
        "NotSupported",
    }
    assert all(c.note for c in d.candidates)
    # Inferentia2 serves only: the runtime's capability row refuses training there, in its own words.
    inf2 = next(c for c in d.candidates if c.pool == "inf2")
    assert (inf2.verdict, inf2.note) == (
        "NotSupported",
        "inferentia2 does not train (neuron-xla serves only there)",
    )
    assert len(d.candidates) == len(POOLS)
    assert d.est_cost == pytest.approx(d.price_per_hour * d.est_hours)
    assert d.est_finish == NOW + timedelta(hours=d.est_hours)


def test_fastest_policy_takes_the_earliest_finish() -> None:
    d = decide(train(placement={"policy": "fastest"}))
    assert d.est_hours == pytest.approx(min(c.hours for c in available(d)))
    cheapest = decide(train())
    assert d.est_hours <= cheapest.est_hours and d.est_cost >= cheapest.est_cost


def test_decision_carries_what_the_workers_need() -> None:
    d = decide(train(), inventory(pool("p5")))
    assert (d.backend, d.resource_name, d.family, d.instance_type) == (
        "cuda",
        "nvidia.com/gpu",
        "nvidia",
        "p5.48xlarge",
    )
    assert len(d.node_names) == d.nodes == 1
    assert d.processes_per_node == d.devices_per_node
    # 90% of the pod's pro rata share of the host (planning.resources.HOST_RESERVE), in exact integer units.
    assert d.requests.cpu_millis == int(192 / 8 * d.devices_per_node * 0.9 * 1000)
    assert d.requests.memory_bytes == int(2048 / 8 * d.devices_per_node * 0.9 * 1024) * 2**20
    assert d.requests.vector()["nvidia.com/gpu"] == d.devices_per_node and d.efa_per_node == 0
    # trn1 trains on the XLA line: one SPMD process per pod; trn2 natively, one process per NeuronCore.
    neuron = decide(train(), inventory(pool("trn1")))
    assert (neuron.backend, neuron.processes_per_node) == ("neuron", 1)
    native = decide(train(), inventory(pool("trn2")))
    assert (native.backend, native.processes_per_node) == ("neuron", 4 * native.devices_per_node)
    tiny = decide(train("tiny", steps=20, batch=8), inventory(pool("cpu")))
    assert (tiny.backend, tiny.resource_name, tiny.processes_per_node) == ("cpu", None, 1)
    assert tiny.requests.cpu_millis == int(8 * tiny.devices_per_node * 0.9 * 1000)


def test_when_the_best_pool_is_full_the_next_with_room_wins() -> None:
    best = decide(train())
    full = [pool(n, used=(DEVICES[n], DEVICES[n])) if n == best.pool else pool(n) for n in POOLS]
    d = decide(train(), inventory(*full))
    assert d.outcome == "placed" and d.pool != best.pool
    row = next(c for c in d.candidates if c.pool == best.pool)
    assert row.verdict == "NoCapacity" and not row.available_now and row.free_devices == 0


def test_queued_when_it_fits_somewhere_but_nowhere_now() -> None:
    busy = inventory(*(pool(n, used=(DEVICES[n], DEVICES[n])) for n in POOLS))
    d = decide(train(), busy)
    assert d.outcome == "queued" and d.reason == "NoCapacity"
    assert "none has room now" in d.message
    assert d.pool is None and d.node_names == ()


def test_caps_and_devices_restrict_the_choice() -> None:
    d = decide(train(placement={"maxPricePerHour": 6}))
    assert d.outcome == "placed" and d.price_per_hour <= 6
    assert decide(train(resources={"devicesPerNode": 2})).devices_per_node == 2


# ------------------------------------------------------------------ capacity


def test_never_promises_a_device_twice() -> None:
    jobs = [job(f"j{i}", train("llama3-1b", resources={"devicesPerNode": 4}), age_min=i) for i in range(9)]
    inv = inventory(pool("p5", nodes=2, used=(4, 0)), promised={"p5-1": 4})
    decisions = plan(jobs, inv, now=NOW)
    placed = [d for d in decisions if d.outcome == "placed"]
    assert len(placed) == 2  # 4 free on each node
    per_node = Counter(n for d in placed for n in d.node_names)
    assert per_node == {"p5-0": 1, "p5-1": 1}
    assert all(d.outcome == "queued" for d in decisions if d not in placed)


def test_not_ready_and_cordoned_nodes_take_nothing() -> None:
    spec = AcceleratorPoolSpec.model_validate(
        {"nodeSelector": {"a": "b"}, "instanceType": "p5.48xlarge", "capacityType": "spot"}
    )
    nodes = (NodeState("down", "p5", ready=False), NodeState("cordoned", "p5", schedulable=False))
    d = decide(train(), Inventory((PoolState("p5", spec, nodes),)))
    assert d.outcome == "queued"


def test_allocatable_from_the_node_overrides_the_pool_shape() -> None:
    spec = AcceleratorPoolSpec.model_validate({"nodeSelector": {"a": "b"}, "instanceType": "p5.48xlarge"})
    half = PoolState("p5", spec, (NodeState("n", "p5", allocatable_devices=2),))
    d = decide(train("llama3-1b"), Inventory((half,)))
    assert d.outcome == "placed" and d.devices_per_node <= 2


def test_a_gang_gets_all_its_nodes_or_none() -> None:
    big = train("llama3-70b", steps=50, batch=192, resources={"families": ["nvidia"]})
    free_two = inventory(pool("p5", nodes=4, used=(0, 0, 1, 1)))
    d = decide(big, free_two)
    assert d.outcome == "queued"
    row = next(c for c in d.candidates if c.pool == "p5")
    assert row.nodes >= 3 and "node(s) with 8 free devices, 2 have them" in row.note
    d = decide(big, inventory(pool("p5", nodes=4, used=(0, 0, 0, 1))))
    assert d.outcome == "placed" and d.nodes == len(set(d.node_names)) == 3
    assert d.devices_per_node == 8 and d.efa_per_node == 32


def test_inference_replicas_may_share_a_node() -> None:
    d = decide(serve(replicas=4), inventory(pool("p5", nodes=1)))
    assert d.outcome == "placed" and d.nodes == 4
    assert len(d.node_names) == 4 and set(d.node_names) == {"p5-0"}
    assert d.devices_per_node * 4 <= 8
    assert d.est_hours is None and d.est_cost is None and d.price_per_hour > 0


# ------------------------------------------------------------------ order


def test_priority_then_age() -> None:
    one_slot = inventory(pool("p5", nodes=1, used=(4,)))
    spec = train("llama3-1b", resources={"devicesPerNode": 4})
    jobs = [
        job("old", spec, age_min=30),
        job("older", spec, age_min=60),
        job("urgent", {**spec, "priority": 100}),
    ]
    decisions = plan(jobs, one_slot, now=NOW)
    assert [d.key for d in decisions] == ["ns/urgent", "ns/older", "ns/old"]
    assert [d.outcome for d in decisions] == ["placed", "queued", "queued"]
    boosted = plan([jobs[0], job("older", spec, age_min=60, priority=-1)], one_slot, now=NOW)
    assert boosted[0].key == "ns/old" and boosted[0].outcome == "placed"


# ------------------------------------------------------------------ constraints


@pytest.mark.parametrize(
    ("sections", "pool_name", "verdict"),
    [
        ({"resources": {"families": ["neuron"]}}, "p5", "FamilyNotAccepted"),
        ({"resources": {"accelerators": ["h100"]}}, "p4d", "AcceleratorNotAccepted"),
        ({"placement": {"capacityTypes": ["on-demand"]}}, "p5", "CapacityTypeNotAccepted"),
        ({"placement": {"pools": ["trn1"]}}, "p5", "PoolNotAllowed"),
    ],
)
def test_accepted_hardware_filters_pools(sections: dict[str, Any], pool_name: str, verdict: str) -> None:
    d = decide(train(**sections))
    assert d.outcome == "placed" and d.pool != pool_name
    assert next(c for c in d.candidates if c.pool == pool_name).verdict == verdict


def test_unknown_accelerator() -> None:
    d = decide(train(resources={"accelerators": ["h100", "tpu-v9"]}))
    assert (d.outcome, d.reason) == ("rejected", "UnknownAccelerator") and "tpu-v9" in d.message


def test_no_accepted_pool() -> None:
    d = decide(train(resources={"families": ["neuron"]}, placement={"capacityTypes": ["spot"]}))
    assert (d.outcome, d.reason) == ("rejected", "NoAcceptedPool")


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        (train(placement={"maxPricePerHour": 0.01}), "ExceedsMaxPrice", "maxPricePerHour"),
        (train(placement={"maxCost": 0.01}), "ExceedsMaxCost", "maxCost"),
        (train(steps=10_000_000, placement={"finishWithin": "1h"}), "DeadlineMiss", "deadline"),
        (train(resources={"devicesPerNode": 3}), "DevicesNotAllowed", "devices per pod"),
        (train(resources={"nodes": 50, "families": ["nvidia"]}), "NotEnoughNodes", "nodes"),
        (train("llama3-70b", resources={"accelerators": ["a10g"]}), "DoesNotFit", "hold the model"),
        (train("llama3-70b", resources={"families": ["cpu"]}), "DoesNotFit", "hold the model"),
        (serve("llama3-70b", targetTokensPerSecond=1e7), "TooSlow", "target"),
    ],
)
def test_a_job_that_can_never_run_is_rejected_with_the_binding_constraint(
    spec: dict[str, Any], reason: str, words: str
) -> None:
    d = decide(spec)
    assert (d.outcome, d.reason) == ("rejected", reason)
    assert words in d.message and "even when empty" in d.message


def test_a_model_too_big_for_any_device_names_memory() -> None:
    huge = train(
        model={
            "dimensions": {
                "hiddenSize": 32768,
                "intermediateSize": 131072,
                "numLayers": 8,
                "numHeads": 256,
                "numKvHeads": 8,
                "vocabSize": 256000,
            }
        }
    )
    d = decide(huge)
    assert (d.outcome, d.reason) == ("rejected", "DoesNotFit")
    assert "GiB per device" in d.message


def test_deadline_in_the_past_and_deadlines_that_need_more_nodes() -> None:
    past = decide(train(placement={"deadline": "2026-05-31T00:00:00Z"}))
    assert (past.outcome, past.reason) == ("rejected", "DeadlineMiss") and "has passed" in past.message
    relaxed = decide(train("llama3-1b", steps=20_000, batch=256, resources={"families": ["nvidia"]}))
    tight = decide(
        train(
            "llama3-1b",
            steps=20_000,
            batch=256,
            resources={"families": ["nvidia"]},
            placement={"finishWithin": "8h"},
        )
    )
    assert tight.outcome == "placed" and tight.est_hours <= 8 < relaxed.est_hours
    assert tight.devices > relaxed.devices
    row = next(c for c in tight.candidates if c.pool == "g5")
    assert row.verdict == "DeadlineMiss" and "nodes to meet the deadline" in row.note


def test_finish_within_counts_from_creation() -> None:
    spec = train("llama3-1b", steps=20_000, batch=256, placement={"finishWithin": "8h"})
    assert decide(spec).outcome == "placed"
    assert decide(spec, age_min=5 * 60).reason == "DeadlineMiss"


# ------------------------------------------------------------------ pools that cannot take the job now


def test_excluded_and_cooling_pools_queue_the_job() -> None:
    only_p5 = train(resources={"families": ["nvidia"]}, placement={"capacityTypes": ["spot"]})
    d = decide(only_p5, inventory(pool("p5")), excluded_pools=frozenset({"p5"}))
    assert d.outcome == "queued" and d.candidates[0].verdict == "Excluded"
    cooling = PoolState("p5", pool("p5").spec, pool("p5").nodes, cooldown_until=NOW + timedelta(minutes=5))
    d = decide(only_p5, Inventory((cooling,)))
    assert d.outcome == "queued" and d.candidates[0].verdict == "CoolingDown"
    cooled = PoolState("p5", pool("p5").spec, pool("p5").nodes, cooldown_until=NOW - timedelta(minutes=5))
    assert decide(only_p5, Inventory((cooled,))).outcome == "placed"


def test_an_unusable_pool_is_reported_not_fatal() -> None:
    broken = PoolState(
        "cb",
        AcceleratorPoolSpec.model_validate(
            {"nodeSelector": {"a": "b"}, "instanceType": "trn2.48xlarge", "capacityType": "reserved"}
        ),
        (NodeState("cb-0", "cb"),),
    )
    d = decide(train(), inventory(broken, pool("p5")))
    assert d.pool == "p5"
    row = next(c for c in d.candidates if c.pool == "cb")
    assert row.verdict == "InvalidPool" and "pricePerNodeHour" in row.note


def test_what_a_pool_learned_scales_its_speed() -> None:
    base = pool("p4d")
    fast = PoolState("p4d", base.spec, base.nodes, learned={("train", "bf16"): 2.0})
    slow_d, fast_d = decide(train(), inventory(base)), decide(train(), Inventory((fast,)))
    assert slow_d.est_tokens_per_second and fast_d.est_tokens_per_second
    per_device = fast_d.est_tokens_per_second / fast_d.devices
    assert per_device == pytest.approx(2.0 * slow_d.est_tokens_per_second / slow_d.devices, rel=1e-6)
    assert fast_d.est_hours is not None and slow_d.est_hours is not None
    assert fast_d.est_hours < slow_d.est_hours
    # An inference factor does not touch training.
    other = PoolState("p4d", base.spec, base.nodes, learned={("inference", "bf16"): 2.0})
    assert decide(train(), Inventory((other,))).est_tokens_per_second == slow_d.est_tokens_per_second


# ------------------------------------------------------------------ bad input


def test_bad_input_becomes_a_rejection_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    no_training = LlamaJobSpec.model_construct(**LlamaJobSpec.model_validate(train()).__dict__)
    no_training.training = None
    d = plan([JobRequest("ns/odd", no_training, NOW)], inventory(), now=NOW)[0]
    assert (d.outcome, d.reason) == ("rejected", "InvalidSpec")

    planner = Planner(inventory(), now=NOW)

    def explode(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(planner, "_evaluate", explode)
    d = planner.decide(job("j", train()))
    assert (d.outcome, d.reason) == ("rejected", "InternalError") and "boom" in d.message


def test_empty_inventory() -> None:
    d = decide(train(), Inventory(()))
    assert (d.outcome, d.reason) == ("rejected", "NoAcceptedPool")


# ------------------------------------------------------------------ status


def test_status_after_each_outcome() -> None:
    placed = decide(train())
    status = placed.to_status(now=NOW)
    assert status.phase == Phase.PLACED and status.pool == placed.pool and status.devices == placed.devices
    assert status.node_names == list(placed.node_names)
    assert status.candidates[0].verdict == "Chosen"
    assert status.placements[-1].pool == placed.pool
    assert status.conditions[-1].type == "Placed" and status.conditions[-1].status == "True"
    patch = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert patch["pricePerHour"] > 0 and "estimatedFinish" in patch

    later = NOW + timedelta(minutes=10)
    queued = decide(train(), inventory(*(pool(n, used=(DEVICES[n], DEVICES[n])) for n in POOLS)))
    requeued = queued.to_status(now=later, previous=status)
    assert requeued.phase == Phase.QUEUED and requeued.pool is None and requeued.node_names == []
    assert requeued.placements == status.placements  # history stays
    assert requeued.conditions[-1].status == "False" and requeued.conditions[-1].last_transition_time == later
    again = queued.to_status(now=later + timedelta(minutes=1), previous=requeued)
    assert again.conditions[-1].last_transition_time == later  # no transition, time kept

    rejected = decide(train(placement={"maxCost": 0.01})).to_status(
        now=NOW, previous=LlamaJobStatus(attempts=2)
    )
    assert rejected.phase == Phase.FAILED and rejected.reason == "ExceedsMaxCost" and rejected.attempts == 2


def test_history_is_capped() -> None:
    status = LlamaJobStatus()
    d = decide(train())
    for i in range(STATUS_HISTORY + 5):
        status = d.to_status(now=NOW + timedelta(minutes=i), previous=status)
    assert len(status.placements) == STATUS_HISTORY


def test_status_shows_the_accepted_pools_and_plan_every_pool() -> None:
    d = decide(train("llama3-1b", resources={"families": ["nvidia"]}))
    assert d.outcome == "placed" and len(d.candidates) == len(POOLS)
    rows = d.to_status(now=NOW).candidates
    # Only the nvidia pools: the others are FamilyNotAccepted, which the job's own spec says.
    assert {c.pool for c in rows} == {"p5", "p4d", "g5"}
    assert rows[0].verdict == "Chosen" and rows[0].pool == d.pool
    assert len(d.to_status(now=NOW, every_pool=True).candidates) == len(POOLS)


def test_status_of_a_job_no_pool_accepts_keeps_every_row_as_the_reason() -> None:
    d = decide(train("llama3-1b", placement={"pools": ["nowhere"]}))
    assert d.outcome == "rejected" and d.reason == "NoAcceptedPool"
    rows = d.to_status(now=NOW).candidates
    assert len(rows) == len(POOLS) and {c.verdict for c in rows} == {"PoolNotAllowed"}
