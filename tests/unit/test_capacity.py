"""Capacity: kube-scheduler's request arithmetic, per-node usage from every pod, and the planner booking
every resource a worker pod requests (one source of truth with the rendered pods)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_operator.api import AcceleratorPool, AcceleratorPoolSpec, LlamaJobSpec
from llama_operator.catalog import builtin
from llama_operator.lifecycle.reconcile import JobContext, Settings, find_failure, reconcile_job
from llama_operator.lifecycle.requests import amount, parse_quantity, pod_requests, resource_list
from llama_operator.lifecycle.snapshot import Options, Snapshot, _decision_from_status, build_inventory
from llama_operator.lifecycle.usage import NodeUsage
from llama_operator.lifecycle.views import job_view, node_view, pod_view
from llama_operator.lifecycle.workerplan import worker_plan
from llama_operator.planning import (
    Decision,
    Inventory,
    JobRequest,
    NodeState,
    Planner,
    PoolState,
    plan,
    resolve_pool,
)
from llama_operator.planning.resources import EFA, HOST_RESERVE, MIB
from llama_operator.planning.resources import pod_requests as worker_requests
from llama_operator.workers import render_pods

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
GPU = "nvidia.com/gpu"


# ------------------------------------------------------------------ quantities and pod requests


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("128974848", Decimal(128974848)),
        ("129e6", Decimal(129000000)),
        ("123Mi", Decimal(123 * 2**20)),
        ("1E", Decimal(10**18)),
        ("1E3", Decimal(1000)),
        ("100k", Decimal(100000)),
        ("10u", Decimal("0.00001")),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities_parse_as_apimachinery_reads_them(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_amounts_are_the_schedulers_integer_units() -> None:
    assert amount("cpu", "250m") == 250 and amount("cpu", "1.0001") == 1001  # MilliValue, rounded up
    assert amount("memory", "1Ki") == 1024 and amount("memory", "0.5") == 1  # Value, rounded up
    assert amount("nvidia.com/gpu", 4) == 4
    assert resource_list({"cpu": "x", "memory": "1Mi"}) == {"cpu": 0, "memory": MIB}
    with pytest.raises(ValueError):
        parse_quantity("12 cats")


def _container(**requests: str) -> dict[str, Any]:
    return {"name": "c", "resources": {"requests": dict(requests)}}


def test_pod_requests_follow_kube_scheduler_with_init_and_sidecar_containers_and_overhead() -> None:
    spec = {
        "containers": [_container(cpu="1", memory="1Gi"), _container(cpu="500m", **{GPU: "2"})],
        "initContainers": [
            _container(cpu="3"),  # a plain init container: alone, before the rest
            {**_container(cpu="200m", memory="2Gi"), "restartPolicy": "Always"},  # a sidecar: runs on
            _container(memory="1Gi"),  # runs beside the sidecar: 2Gi + 1Gi
        ],
        "overhead": {"cpu": "100m"},
    }
    # cpu: max(1 + 0.5 + 0.2 sidecar, 3) + 0.1; memory: max(1 + 2, 2 + 1) = 3Gi; the GPUs add up.
    assert pod_requests(spec) == {"cpu": 3100, "memory": 3 * 2**30, GPU: 2}


def test_pod_level_requests_replace_the_containers_for_cpu_and_memory_only() -> None:
    spec = {
        "containers": [_container(cpu="1", memory="1Gi", **{GPU: "1"})],
        "resources": {"requests": {"cpu": "4", "memory": "8Gi"}},
    }
    assert pod_requests(spec) == {"cpu": 4000, "memory": 8 * 2**30, GPU: 1}


def _pod(name: str, node: str | None = None, *, phase: str = "Running", **requests: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "other", "uid": f"uid-{name}"},
        "spec": {"nodeName": node, "containers": [_container(**requests)]}
        if node
        else {"containers": [_container(**requests)]},
        "status": {"phase": phase},
    }


def test_usage_counts_bound_nominated_and_pinned_pods_until_they_finish() -> None:
    bound = _pod("bound", "n1", cpu="2", **{GPU: "1"})
    nominated = _pod("nominated", cpu="1")
    nominated["status"] = {"phase": "Pending", "nominatedNodeName": "n1"}
    pinned = _pod("ds", cpu="100m")
    pinned["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
                ]
            }
        }
    }
    done = _pod("done", "n1", phase="Succeeded", cpu="8")
    floating = _pod("floating", cpu="8")  # pending, could go anywhere: holds nothing yet
    usage = NodeUsage.of(pod_view(b) for b in (bound, nominated, pinned, done, floating))
    assert usage.by_node == {"n1": {"cpu": 3000, GPU: 1, "pods": 2}, "n2": {"cpu": 100, "pods": 1}}
    assert usage.update("uid-bound", pod_view({**bound, "status": {"phase": "Succeeded"}})) == "freed"
    assert usage.by_node["n1"] == {"cpu": 1000, "pods": 1}
    assert usage.update("uid-nominated", None) == "freed" and "n1" not in usage.by_node
    assert usage.update("uid-late", pod_view(_pod("late", "n2", cpu="1"))) == "taken"
    assert not usage.update("uid-floating", pod_view(floating))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 4), st.sampled_from(["n1", "n2", None])),
        max_size=30,
    )
)
def test_incremental_usage_equals_a_recount(events: list[tuple[str, int, str | None]]) -> None:
    """Any sequence of pod updates and deletions leaves the totals a fresh count would give."""
    usage, latest = NodeUsage(), {}
    for name, cpu, node in events:
        if cpu == 0:
            usage.update(f"uid-{name}", None)
            latest.pop(name, None)
        else:
            view = pod_view(_pod(name, node, cpu=str(cpu)))
            usage.update(f"uid-{name}", view)
            latest[name] = view
    assert usage.by_node == NodeUsage.of(latest.values()).by_node


# ------------------------------------------------------------------ one source of truth


def _pool(instance: str, name: str = "p") -> AcceleratorPool:
    return AcceleratorPool.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"llamaop.io/pool": name},
                "instanceType": instance,
                "pricePerNodeHour": 1.0,
            },
        }
    )


@pytest.mark.parametrize("instance", sorted(builtin().instance_types))
def test_the_rendered_pods_request_exactly_what_the_planner_booked(instance: str) -> None:
    """For every instance type of the catalog: the booked vector, parsed back from the rendered pod by the
    same arithmetic the inventory applies to every other pod, is equal resource by resource."""
    catalog = builtin()
    pool = _pool(instance)
    kind = resolve_pool(pool.spec, catalog)
    spec = LlamaJobSpec.model_validate(
        {"mode": "train", "model": {"preset": "tiny"}, "training": {"steps": 10}}
    )
    job = job_view({"metadata": {"name": "j", "namespace": "ns", "uid": "u"}, "spec": spec.model_dump()})
    for devices in kind.allowed_device_counts:
        for spans in (False, True):
            requests = worker_requests(kind, devices, spans)
            nodes = ("n0", "n1") if spans else ("n0",)
            decision = Decision(
                key="ns/j",
                outcome="placed",
                reason="Placed",
                message="",
                pool="p",
                backend=kind.backend,
                resource_name=kind.resource_name,
                instance_type=instance,
                node_names=nodes,
                nodes=len(nodes),
                devices_per_node=devices,
                requests=requests,
            )
            rendered = worker_plan(
                name=job.name,
                namespace=job.namespace,
                uid=job.uid,
                spec=spec,
                decision=decision,
                pool=pool,
                attempt=1,
                default_images={"cpu": "i", "cuda": "i", "neuron": "i"},
                image_pull_policy="Never",
            )
            for pod in render_pods(rendered):
                view = pod_view(pod)
                assert {**view.requests, "pods": 1} == requests.vector(), (instance, devices, spans)
                limits = pod["spec"]["containers"][0]["resources"]["limits"]
                assert all(
                    limits[r] == q
                    for r, q in pod["spec"]["containers"][0]["resources"]["requests"].items()
                    if r != "cpu"
                )


@pytest.mark.parametrize(("devices", "nodes"), [(1, 1), (2, 2), (4, 1), (4, 4)])
def test_what_the_engine_takes_from_each_node_is_what_its_pod_and_a_re_render_after_restart_request(
    devices: int, nodes: int
) -> None:
    planner = Planner(Inventory((_g5(4),)), now=NOW)
    decision = planner.decide(_gang("j", devices, nodes))
    assert decision.outcome == "placed" and len(decision.node_names) == nodes
    slots = planner.pools[0].slots
    assert slots.host is not None
    for name in decision.node_names:
        taken = {r: G5_NODE[r] - slots.host[name][r] for r in G5_NODE if r != GPU}
        taken[GPU] = 4 - slots.free[name]
        assert {r: v for r, v in taken.items() if v} == decision.requests.vector()
    pool = AcceleratorPool.model_validate(
        {"metadata": {"name": "g5"}, "spec": _g5_spec().model_dump(by_alias=True)}
    )
    job = _placed_job("j", list(decision.node_names), devices)
    options = Options(settings=Settings(), catalog=builtin())
    rebuilt = _decision_from_status(job, pool, options)
    assert rebuilt is not None and rebuilt.requests == decision.requests


def test_worker_requests_leave_room_for_the_node_reserve_and_daemonsets() -> None:
    kind = resolve_pool(_pool("p5.48xlarge").spec, builtin())
    full = worker_requests(kind, 8, spans_nodes=True)
    assert full.cpu_millis == math.floor(192 * (1 - HOST_RESERVE) * 1000) and full.efa == 32
    assert full.memory_bytes % MIB == 0 and full.memory_bytes < 2048 * 2**30
    assert worker_requests(kind, 4, spans_nodes=True).efa == 16  # EFA pro rata of the devices
    assert worker_requests(kind, 8, spans_nodes=False).efa == 0  # one node: no collectives between nodes
    g5 = resolve_pool(_pool("g5.12xlarge").spec, builtin())
    assert worker_requests(g5, 2, spans_nodes=True).efa == 1  # the node's one interface, whole
    # A small instance keeps at least 2.5 GiB: a g5.xlarge (16 GiB) worker asks for 13.5 GiB, which fits
    # the ~14.3 GiB an EKS node of that size has allocatable; 90% (14.4 GiB) would not.
    small = resolve_pool(_pool("g5.xlarge").spec, builtin())
    assert worker_requests(small, 1, spans_nodes=False).memory_bytes == int(13.5 * 1024) * MIB


def test_the_local_clusters_nodes_have_what_the_catalog_says() -> None:
    """hack/cluster/pools.yaml fakes the nodes the catalog describes: devices, EFA, vCPUs and memory."""
    catalog = builtin()
    for entry in yaml.safe_load((ROOT / "hack" / "cluster" / "pools.yaml").read_text())["pools"]:
        itype = catalog.instance_types[entry["instanceType"]]
        capacity = resource_list(entry["capacity"])
        accelerator = catalog.accelerators[itype.accelerator]
        if accelerator.family != "cpu":
            resource = "aws.amazon.com/neuron" if accelerator.family == "neuron" else GPU
            assert capacity[resource] == itype.devices, entry["name"]
        assert capacity.get(EFA, 0) == itype.efa, entry["name"]
        assert capacity["cpu"] == itype.vcpus * 1000, entry["name"]
        assert capacity["memory"] == itype.memory_gib * 2**30, entry["name"]


# ------------------------------------------------------------------ the planner books every resource


def _g5_spec() -> AcceleratorPoolSpec:
    return AcceleratorPoolSpec.model_validate(
        {"nodeSelector": {"llamaop.io/pool": "g5"}, "instanceType": "g5.12xlarge", "pricePerNodeHour": 2.27}
    )


G5_NODE = {"cpu": 48_000, "memory": 192 * 2**30, "pods": 110, GPU: 4, EFA: 1}


def _g5(nodes: int, requested: dict[str, dict[str, int]] | None = None) -> PoolState:
    requested = requested or {}
    states = tuple(
        NodeState(
            f"g5-{i}",
            "g5",
            allocatable_devices=4,
            used_devices=requested.get(f"g5-{i}", {}).get(GPU, 0),
            allocatable=G5_NODE,
            requested=requested.get(f"g5-{i}", {}),
        )
        for i in range(nodes)
    )
    return PoolState("g5", _g5_spec(), states)


def _gang(key: str, devices: int, nodes: int, age: int = 0) -> JobRequest:
    spec = {
        "mode": "train",
        "model": {"preset": "tiny"},
        "training": {"steps": 100, "sequenceLength": 256, "batchSize": 64},
        "resources": {"families": ["nvidia"], "devicesPerNode": devices, "nodes": nodes},
    }
    return JobRequest(f"ns/{key}", LlamaJobSpec.model_validate(spec), NOW - timedelta(minutes=age))


def test_a_second_gang_never_shares_a_node_whose_only_efa_interface_is_taken() -> None:
    """The issue's case: two 2-node jobs of 2 GPUs + 1 EFA per pod on g5.12xlarge (4 GPUs, 1 EFA)."""
    first, second, third = plan(
        [_gang("a", 2, 2, age=3), _gang("b", 2, 2, age=2), _gang("c", 2, 2, age=1)],
        Inventory((_g5(4),)),
        now=NOW,
    )
    assert first.outcome == second.outcome == "placed"
    assert first.efa_per_node == second.efa_per_node == 1
    assert not set(first.node_names) & set(second.node_names)
    # Every node still has 2 GPUs free, but no EFA: the third gang waits, and says what binds.
    assert third.outcome == "queued" and third.reason == "NoCapacity"
    note = next(c.note for c in third.candidates if c.pool == "g5")
    assert "4 have the devices" in note and EFA in note


def test_cpu_and_memory_held_by_foreign_pods_count() -> None:
    busy = {"g5-0": {"cpu": 30_000, "pods": 1}, "g5-1": {"memory": 150 * 2**30, "pods": 1}}
    whole, one = plan(
        [_gang("whole", 4, 1, age=2), _gang("one", 1, 1, age=1)], Inventory((_g5(2, busy),)), now=NOW
    )
    assert whole.outcome == "queued"  # 43.2 cpu and 172.8Gi a pod: neither node has both free
    assert one.outcome == "placed" and one.node_names == ("g5-0",)  # g5-1 has 42Gi free, the pod asks 43.2Gi


def test_a_full_node_of_pod_slots_takes_no_more_pods() -> None:
    (d,) = plan([_gang("j", 1, 1)], Inventory((_g5(1, {"g5-0": {"pods": 110}}),)), now=NOW)
    assert d.outcome == "queued"


def test_without_known_allocatable_only_devices_are_booked() -> None:
    """The simulator and `llamaop plan` know no allocatable: host resources are not limits there."""
    nodes = tuple(NodeState(f"g5-{i}", "g5") for i in range(2))
    decisions = plan(
        [_gang(k, 2, 2, age=i) for i, k in enumerate("abc")],
        Inventory((PoolState("g5", _g5_spec(), nodes),)),
        now=NOW,
    )
    assert [d.outcome for d in decisions] == ["placed", "placed", "queued"]


# ------------------------------------------------------------------ the inventory from a snapshot


def _cluster_node(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"llamaop.io/pool": "g5"}},
        "status": {
            "allocatable": {"cpu": "48", "memory": "192Gi", "pods": "110", GPU: "4", EFA: "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _placed_job(name: str, nodes: list[str], devices: int = 2) -> Any:
    spec = _gang(name, devices, len(nodes)).spec.model_dump(by_alias=True, exclude_none=True)
    status = {"phase": "Placed", "pool": "g5", "attempts": 1, "nodeNames": nodes, "devicesPerNode": devices}
    return job_view(
        {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"}, "spec": spec, "status": status}
    )


def _worker(job: str, rank: int, node: str, *, bound: bool) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{job}-{rank}",
            "namespace": "ns",
            "uid": f"w-{job}-{rank}",
            "labels": {
                "app.kubernetes.io/managed-by": "llama-operator",
                "llamaop.io/attempt": "1",
                "llamaop.io/rank": str(rank),
            },
            "ownerReferences": [{"kind": "LlamaJob", "name": job}],
        },
        "spec": {
            "nodeName": node if bound else None,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                        ]
                    }
                }
            },
            "containers": [_container(cpu="21600m", memory="88473Mi", **{GPU: "2", EFA: "1"})],
        },
        "status": {"phase": "Running" if bound else "Pending"},
    }


def test_the_inventory_counts_seen_workers_by_their_pods_and_unseen_ones_by_promise() -> None:
    job = _placed_job("a", ["g5-0", "g5-1"])
    # Rank 0 exists (bound) and is counted from its pod; rank 1 is not seen yet: promised.
    worker = pod_view(_worker("a", 0, "g5-0", bound=True))
    foreign = pod_view(_pod("other", "g5-1", cpu="4"))
    pool = AcceleratorPool.model_validate(
        {"metadata": {"name": "g5"}, "spec": _g5_spec().model_dump(by_alias=True)}
    )
    snap = Snapshot(
        now=NOW,
        jobs={job.key: job},
        pods={job.key: [worker]},
        pools={"g5": pool},
        nodes={n: node_view(_cluster_node(n)) for n in ("g5-0", "g5-1")},
        usage=NodeUsage.of([worker, foreign]).by_node,
    )
    inventory = build_inventory(snap, builtin(), [job])
    states = {n.name: n for n in inventory.pools[0].nodes}
    assert states["g5-0"].used_devices == 2 and states["g5-0"].requested[EFA] == 1
    assert "g5-0" not in inventory.promised  # seen: not promised again
    assert inventory.promised == {"g5-1": 2}
    assert inventory.promised_requests["g5-1"][EFA] == 1
    assert states["g5-1"].requested == {"cpu": 4000, "pods": 1}
    # Nothing more fits a 2-node gang of 2 GPUs + 1 EFA a pod: both EFA interfaces are taken.
    (d,) = plan([_gang("b", 2, 2)], inventory, now=NOW)
    assert d.outcome == "queued"


# ------------------------------------------------------------------ a pod the scheduler refuses


def test_a_worker_refused_for_a_resource_is_reported_and_re_placed_without_cooling_the_pool() -> None:
    job = _placed_job("a", ["g5-0", "g5-1"])
    pending = _worker("a", 1, "g5-1", bound=False)
    message = (
        "0/22 nodes are available: 1 Insufficient vpc.amazonaws.com/efa, 21 node(s) didn't match Pod's "
        "node affinity/selector. preemption: 0/22 nodes are available: 22 Preemption is not helpful."
    )
    since = NOW - timedelta(seconds=3)
    pending["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": since.isoformat(),
        }
    ]
    pods = [pod_view(_worker("a", 0, "g5-0", bound=True)), pod_view(pending)]
    assert pods[1].short_of == (EFA,)
    nodes = {n: node_view(_cluster_node(n)) for n in ("g5-0", "g5-1")}
    seen = NOW - timedelta(seconds=5)
    # Within the grace the scheduler may still bind it (its cache can trail the operator's).
    assert find_failure(JobContext(job, pods, nodes, NOW, seen), pods, 2) is None
    later = NOW + timedelta(seconds=10)
    actions, _ = reconcile_job(JobContext(job, pods, nodes, later, seen), Settings())
    kinds = [type(a).__name__ for a in actions.actions]
    assert "ReportUnschedulable" in kinds and "CoolDownPool" not in kinds
    report = next(a for a in actions.actions if type(a).__name__ == "ReportUnschedulable")
    assert (report.pool, report.node, report.resources) == ("g5", "g5-1", (EFA,))
    status = actions.final_status()
    assert (
        status is not None
        and status.status["phase"] == "Queued"
        and status.status["reason"] == "Unschedulable"
    )
    assert message in status.status["message"]
    mismatch = next(c for c in status.status["conditions"] if c["type"] == "CapacityMismatch")
    assert message in mismatch["message"] and mismatch["status"] == "True"
    event = next(a for a in actions.actions if type(a).__name__ == "RecordEvent")
    assert event.type == "Warning" and message in event.message


def test_a_worker_held_back_by_anything_but_resources_is_left_to_the_pending_timeout() -> None:
    job = _placed_job("a", ["g5-0"])
    pending = _worker("a", 0, "g5-0", bound=False)
    pending["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) had untolerated taint.",
            "lastTransitionTime": NOW.isoformat(),
        }
    ]
    pods = [pod_view(pending)]
    assert pods[0].short_of == ()
    nodes = {"g5-0": node_view(_cluster_node("g5-0"))}
    assert find_failure(JobContext(job, pods, nodes, NOW + timedelta(seconds=15), NOW), pods, 1) is None
