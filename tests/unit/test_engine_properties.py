"""Properties of the engine over random queues and inventories (hypothesis)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_operator.api import AcceleratorPoolSpec, LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.planning import Decision, Inventory, JobRequest, NodeState, PoolState, plan, resolve_pool
from llama_operator.planning.estimate import options, policy_key, rates_for
from llama_operator.planning.workload import workload_of

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = builtin()
TYPES = sorted(CATALOG.instance_types)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pool_states(draw: st.DrawFn, index: int) -> PoolState:
    itype = draw(st.sampled_from(TYPES))
    capacity = draw(st.sampled_from(["on-demand", "spot", "reserved"]))
    name = f"pool-{index}"
    spec: dict[str, Any] = {
        "nodeSelector": {"llamaop.io/pool": name},
        "instanceType": itype,
        "capacityType": capacity,
    }
    if capacity == "reserved" or CATALOG.instance_types[itype].price is None or draw(st.booleans()):
        spec["pricePerNodeHour"] = draw(st.floats(0.5, 80.0))
    count = draw(st.integers(0, 4))
    if draw(st.booleans()):
        spec["maxNodes"] = count + draw(st.integers(0, 2))
    devices = CATALOG.instance_types[itype].devices
    nodes = tuple(
        NodeState(
            f"{name}-n{i}",
            name,
            ready=draw(st.booleans()) or draw(st.booleans()),
            schedulable=draw(st.booleans()) or draw(st.booleans()),
            allocatable_devices=draw(st.sampled_from([None, None, devices, max(devices // 2, 1)])),
            used_devices=draw(st.integers(0, devices)),
        )
        for i in range(count)
    )
    cooldown = NOW + timedelta(minutes=5) if draw(st.integers(0, 9)) == 0 else None
    return PoolState(name, AcceleratorPoolSpec.model_validate(spec), nodes, cooldown_until=cooldown)


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    pools = tuple(draw(pool_states(i)) for i in range(draw(st.integers(1, 6))))
    names = [n.name for p in pools for n in p.nodes]
    promised = {n: draw(st.integers(0, 8)) for n in names if draw(st.integers(0, 3)) == 0}
    return Inventory(pools, promised)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    preset = draw(st.sampled_from(["tiny", "tiny", "llama3-1b", "llama3-3b", "llama3-8b", "llama3-70b"]))
    spec: dict[str, Any] = {"model": {"preset": preset}, "resources": {}, "placement": {}}
    if draw(st.integers(0, 3)) == 0:
        spec["mode"] = "inference"
        spec["inference"] = {
            "replicas": draw(st.integers(1, 4)),
            "maxBatch": draw(st.sampled_from([1, 8, 32])),
        }
        if draw(st.integers(0, 4)) == 0:
            spec["inference"]["targetTokensPerSecond"] = draw(st.floats(10, 20_000))
    else:
        spec["mode"] = "train"
        spec["training"] = {
            "steps": draw(st.integers(1, 5000)),
            "batchSize": draw(st.sampled_from([8, 16, 64, 256])),
        }
        if draw(st.booleans()):
            spec["training"]["activationCheckpointing"] = draw(st.booleans())
        if draw(st.integers(0, 3)) == 0:
            spec["placement"]["maxCost"] = draw(st.floats(1, 5000))
        if draw(st.integers(0, 3)) == 0:
            spec["placement"]["finishWithin"] = f"{draw(st.integers(1, 100))}h"
        if draw(st.integers(0, 4)) == 0:
            spec["resources"]["nodes"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        spec["resources"]["families"] = draw(
            st.lists(st.sampled_from(["neuron", "nvidia", "cpu"]), min_size=1, max_size=3, unique=True)
        )
    if draw(st.integers(0, 3)) == 0:
        spec["resources"]["devicesPerNode"] = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    if draw(st.integers(0, 3)) == 0:
        spec["placement"]["capacityTypes"] = draw(
            st.lists(st.sampled_from(["on-demand", "spot", "reserved"]), min_size=1, max_size=3, unique=True)
        )
    if draw(st.integers(0, 3)) == 0:
        spec["placement"]["maxPricePerHour"] = draw(st.floats(0.1, 100))
    spec["placement"]["policy"] = draw(st.sampled_from(["cheapest", "fastest"]))
    spec["priority"] = draw(st.sampled_from([0, 0, 10, -5]))
    return spec


@st.composite
def queues(draw: st.DrawFn) -> list[JobRequest]:
    out = []
    for i in range(draw(st.integers(1, 8))):
        excluded = frozenset({"pool-0"}) if draw(st.integers(0, 5)) == 0 else frozenset()
        created = NOW - timedelta(minutes=draw(st.integers(0, 600)))
        out.append(
            JobRequest(f"ns/job-{i}", LlamaJobSpec.model_validate(draw(specs())), created, None, excluded)
        )
    return out


def _free(inv: Inventory) -> dict[str, int]:
    free = {}
    for p in inv.pools:
        per_node = resolve_pool(p.spec, CATALOG).devices_per_node
        for n in p.nodes:
            allocatable = per_node if n.allocatable_devices is None else n.allocatable_devices
            usable = n.ready and n.schedulable
            free[n.name] = max(0, allocatable - n.used_devices - inv.promised.get(n.name, 0)) if usable else 0
    return free


def _empty(inv: Inventory) -> Inventory:
    """The same pools with every node they can have ready, idle and promised to nobody."""
    return Inventory(
        tuple(
            PoolState(
                p.name, p.spec, tuple(NodeState(f"{p.name}-e{i}", p.name) for i in range(p.capacity_nodes()))
            )
            for p in inv.pools
        )
    )


@PROPERTY
@given(queues(), inventories())
def test_decisions_never_exceed_free_devices(jobs: list[JobRequest], inv: Inventory) -> None:
    taken: Counter[str] = Counter()
    pools = {p.name: {n.name for n in p.nodes} for p in inv.pools}
    for d in plan(jobs, inv, now=NOW):
        if d.outcome == "placed":
            assert set(d.node_names) <= pools[d.pool or ""]
            for node in d.node_names:
                taken[node] += d.devices_per_node
    free = _free(inv)
    assert all(taken[node] <= free[node] for node in taken), (taken, free)


@PROPERTY
@given(queues(), inventories())
def test_placements_honour_every_constraint(jobs: list[JobRequest], inv: Inventory) -> None:
    by_key = {j.key: j for j in jobs}
    states = {p.name: p for p in inv.pools}
    for d in plan(jobs, inv, now=NOW):
        assert d.reason and d.reason[0].isupper() and " " not in d.reason and d.message
        if d.outcome != "placed":
            continue
        job, state = by_key[d.key], states[d.pool or ""]
        spec, kind = job.spec, resolve_pool(state.spec, CATALOG)
        families = spec.resources.families
        assert "any" in families or kind.family in families
        assert kind.capacity_type in spec.placement.capacity_types
        assert d.pool not in job.excluded_pools
        assert state.cooldown_until is None or state.cooldown_until <= NOW
        assert d.devices_per_node in kind.allowed_device_counts
        assert spec.resources.devices_per_node in (None, d.devices_per_node)
        cap = spec.placement.max_price_per_hour
        assert cap is None or d.price_per_hour <= cap + 1e-9
        if spec.mode == "train":
            assert len(d.node_names) == d.nodes
            # One pod per node on accelerators; cpu slots of one node may hold several ranks.
            assert kind.family == "cpu" or len(set(d.node_names)) == d.nodes
            assert spec.resources.nodes in (None, d.nodes)
            assert spec.placement.max_cost is None or d.est_cost <= spec.placement.max_cost + 1e-9
            deadline = workload_of(spec, job.created).deadline
            assert deadline is None or d.est_finish <= deadline
            assert spec.training is not None
            assert (
                spec.training.batch_size % (d.nodes * d.processes_per_node * spec.training.micro_batch) == 0
            )
        else:
            assert len(d.node_names) == d.nodes == spec.serving().replicas
            target = spec.serving().target_tokens_per_second
            assert target is None or d.est_tokens_per_second >= target


@PROPERTY
@given(queues(), inventories(), st.randoms(use_true_random=False))
def test_decisions_are_deterministic_and_independent_of_input_order(
    jobs: list[JobRequest], inv: Inventory, rng: random.Random
) -> None:
    first = plan(jobs, inv, now=NOW)
    assert plan(jobs, inv, now=NOW) == first
    shuffled = list(jobs)
    rng.shuffle(shuffled)
    assert plan(shuffled, inv, now=NOW) == first


@PROPERTY
@given(queues(), inventories())
def test_queued_means_it_fits_when_empty_and_rejected_means_it_never_does(
    jobs: list[JobRequest], inv: Inventory
) -> None:
    empty = _empty(inv)
    for job, d in zip(
        sorted(jobs, key=lambda j: (-j.effective_priority, j.created, j.key)),
        plan(jobs, inv, now=NOW),
        strict=True,
    ):
        alone = plan([JobRequest(job.key, job.spec, job.created)], empty, now=NOW)[0]
        if d.outcome == "queued":
            assert alone.outcome == "placed", (d.message, alone.message)
        elif d.outcome == "rejected":
            assert (alone.outcome, alone.reason) == ("rejected", d.reason)


@PROPERTY
@given(inventories(), specs())
def test_the_fast_path_agrees_with_the_reference_options(inv: Inventory, raw: dict[str, Any]) -> None:
    """On idle pools, each pool's best candidate is the best of `options()` for that pool."""
    spec = LlamaJobSpec.model_validate(raw)
    empty = _empty(inv)
    d = plan([JobRequest("ns/j", spec, NOW)], empty, now=NOW)[0]
    work = workload_of(spec, NOW)
    rows = {c.pool: c for c in d.candidates}
    for state in empty.pools:
        row = rows[state.name]
        if not row.available_now:
            continue
        kind = resolve_pool(state.spec, CATALOG)
        assert CATALOG.calibration is not None
        rates = rates_for(work, kind, CATALOG.calibration)
        hours = None if work.deadline is None else (work.deadline - NOW).total_seconds() / 3600
        found = options(
            work,
            kind,
            CATALOG.defaults,
            node_limit=state.capacity_nodes(),
            rates=rates,
            hours_left=hours,
        )
        best = min((o for o in found if o.ok), key=lambda o: policy_key(work, o))
        assert (row.devices_per_node, row.nodes) == (best.devices_per_node, best.pods)
        assert row.price_per_hour == pytest.approx(best.price_per_hour)


@st.composite
def impossible(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    kind = draw(st.sampled_from(["memory", "price", "devices", "deadline"]))
    spec: dict[str, Any] = {"mode": "train", "model": {"preset": "tiny"}, "training": {"steps": 100}}
    if kind == "memory":
        spec["model"] = {
            "dimensions": {
                "hiddenSize": 65536,
                "intermediateSize": 262144,
                "numLayers": 4,
                "numHeads": 512,
                "numKvHeads": 8,
                "vocabSize": 1_000_000,
            }
        }
        return spec, "DoesNotFit"
    if kind == "price":
        spec["placement"] = {"maxPricePerHour": 1e-4}
        return spec, "ExceedsMaxPrice"
    if kind == "devices":
        spec["resources"] = {"devicesPerNode": 128}
        return spec, "DevicesNotAllowed"
    spec["training"] = {"steps": 10_000_000, "batchSize": 1}
    spec["placement"] = {"finishWithin": "1m"}
    return spec, "DeadlineMiss"


@PROPERTY
@given(inventories(), impossible())
def test_a_job_no_pool_can_fit_is_rejected_naming_the_binding_constraint(
    inv: Inventory, case: tuple[dict[str, Any], str]
) -> None:
    raw, reason = case
    usable = [p for p in inv.pools if p.capacity_nodes() > 0]
    # Where every usable pool's runtime cannot train (Inferentia2), that, or a pool without room, binds.
    refusing = all(str(p.spec.instance_type).startswith("inf2") for p in usable)
    d: Decision = plan([JobRequest("ns/j", LlamaJobSpec.model_validate(raw), NOW)], inv, now=NOW)[0]
    assert d.outcome == "rejected"
    if usable and refusing and reason != "DevicesNotAllowed":
        assert d.reason in ("NotSupported", "NotEnoughNodes", reason), d.message
    elif usable:
        assert d.reason == reason, d.message
        assert d.message and "even when empty" in d.message
    else:
        assert d.reason in ("NotEnoughNodes", "DoesNotFit", "DeadlineMiss", "NotSupported", reason)
