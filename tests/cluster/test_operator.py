"""The operator on the real local cluster: placement, queueing, gangs, failover, retries, restarts.

kwok runs the worker pods: they go Running on their own, and a test ends them by annotating them with
an exit code (hack/cluster/stages.yaml).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.capacity import (
    EFA,
    GPU,
    apply_all,
    delete_and_wait,
    foreign_pod,
    overbooked,
    pause_workload,
    pending_for_resources,
    pods,
    train_job,
)
from tests.kube import ROOT, Kubectl, llamajob_manifest, set_node_ready, wait_for
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

EXIT_CODE = "kwok.llamaop.io/exit-code"


def llamajob(
    name: str,
    *,
    families: tuple[str, ...] = ("any",),
    preset: str = "tiny",
    devices: int | None = None,
    nodes: int | None = None,
    pools: tuple[str, ...] = (),
    **placement: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"families": list(families)}
    if devices:
        resources["devicesPerNode"] = devices
    if nodes:
        resources["nodes"] = nodes
    return llamajob_manifest(
        name,
        {
            "mode": "train",
            "model": {"preset": preset},
            "training": {"steps": 100, "sequenceLength": 256, "batchSize": 64},
            "resources": resources,
            "placement": {"pools": list(pools), "pendingTimeout": "20s", **placement},
        },
    )


def status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return kubectl.json("get", "llamajob", name, "-n", ns).get("status", {})


def wait_phase(kubectl: Kubectl, ns: str, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (st := status(kubectl, ns, name)).get("phase") in phases and st,
        timeout=timeout,
        what=f"{name} to reach {phases}",
    )


def worker_pods(kubectl: Kubectl, ns: str, job: str) -> list[dict[str, Any]]:
    pods = kubectl.json("get", "pods", "-n", ns, "-l", f"llamaop.io/job={job}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def end_workers(kubectl: Kubectl, ns: str, job: str, code: int) -> None:
    for pod in worker_pods(kubectl, ns, job):
        kubectl.run(
            "annotate", "pod", pod["metadata"]["name"], "-n", ns, f"{EXIT_CODE}={code}", "--overwrite"
        )


def test_every_example_applies_and_gets_a_decision(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples, "examples/ has LlamaJobs"
    for path in examples:
        kubectl.run("apply", "-n", jobs_namespace, "-f", str(path))
    names = [j["metadata"]["name"] for j in kubectl.json("get", "llamajobs", "-n", jobs_namespace)["items"]]
    assert len(names) >= 5
    for name in names:
        st = wait_phase(kubectl, jobs_namespace, name, "Placed", "Running", "Queued", "Failed")
        assert st["candidates"], name
        assert st["reason"] and st["message"], name


def test_the_cheapest_feasible_pool_wins_and_the_status_says_why(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    kubectl.apply(llamajob("ft", preset="llama3-8b"), jobs_namespace)
    st = wait_phase(kubectl, jobs_namespace, "ft", "Placed", "Running")
    chosen = [c for c in st["candidates"] if c["verdict"] == "Chosen"]
    assert [c["pool"] for c in chosen] == [st["pool"]]
    rivals = [c for c in st["candidates"] if c["availableNow"] and c.get("cost") is not None and c["fits"]]
    assert all(chosen[0]["cost"] <= c["cost"] for c in rivals)
    assert st["pricePerHour"] > 0 and st["estimatedCost"] > 0
    assert len(worker_pods(kubectl, jobs_namespace, "ft")) == st["nodes"]
    reasons = [e["reason"] for e in kubectl.json("get", "events", "-n", jobs_namespace)["items"]]
    assert "Placed" in reasons


def test_a_full_pool_sends_the_next_job_to_the_next_pool_and_a_freed_one_places_the_queued_job(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    neuron = {"families": ("neuron",), "devices": 16, "nodes": 1}
    for i in range(4):  # trn1-32xl-od has 4 nodes of 16 devices
        kubectl.apply(llamajob(f"fill-{i}", pools=("trn1-32xl-od",), **neuron), jobs_namespace)
    for i in range(4):
        assert wait_phase(kubectl, jobs_namespace, f"fill-{i}", "Placed", "Running")["pool"] == "trn1-32xl-od"
    kubectl.apply(llamajob("spill", pools=("trn1-32xl-od", "trn2-48xl-cb"), **neuron), jobs_namespace)
    assert wait_phase(kubectl, jobs_namespace, "spill", "Placed", "Running")["pool"] == "trn2-48xl-cb"
    kubectl.apply(llamajob("wait", pools=("trn1-32xl-od",), **neuron), jobs_namespace)
    queued = wait_phase(kubectl, jobs_namespace, "wait", "Queued")
    wait_for(lambda: status(kubectl, jobs_namespace, "wait").get("reason") == "NoCapacity", what="NoCapacity")
    assert not worker_pods(kubectl, jobs_namespace, "wait"), queued
    end_workers(kubectl, jobs_namespace, "fill-0", 0)
    assert wait_phase(kubectl, jobs_namespace, "fill-0", "Succeeded")["accruedCost"] > 0
    assert wait_phase(kubectl, jobs_namespace, "wait", "Placed", "Running")["pool"] == "trn1-32xl-od"


def test_a_gang_job_gets_all_its_nodes_or_none(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    pool = ("p4d-24xl-od",)  # 2 nodes of 8 A100
    kubectl.apply(llamajob("one", families=("nvidia",), devices=8, nodes=1, pools=pool), jobs_namespace)
    wait_phase(kubectl, jobs_namespace, "one", "Placed", "Running")
    kubectl.apply(llamajob("gang", families=("nvidia",), devices=8, nodes=2, pools=pool), jobs_namespace)
    wait_phase(kubectl, jobs_namespace, "gang", "Queued")
    time.sleep(3)
    assert status(kubectl, jobs_namespace, "gang")["phase"] == "Queued"
    assert not worker_pods(kubectl, jobs_namespace, "gang")
    end_workers(kubectl, jobs_namespace, "one", 0)
    st = wait_phase(kubectl, jobs_namespace, "gang", "Placed", "Running")
    pods = wait_for(lambda: len(p := worker_pods(kubectl, jobs_namespace, "gang")) == 2 and p, what="2 pods")
    assert sorted(st["nodeNames"]) == ["p4d-24xl-od-0", "p4d-24xl-od-1"]
    assert {p["metadata"]["labels"]["llamaop.io/rank"] for p in pods} == {"0", "1"}


def test_a_not_ready_node_moves_its_job_to_another_pool(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    job = llamajob("move", families=("cpu", "nvidia"), pools=("cpu-m7i-od", "g5-12xl-spot"))
    kubectl.apply(job, jobs_namespace)
    st = wait_phase(kubectl, jobs_namespace, "move", "Running")
    node, first = st["nodeNames"][0], st["pool"]
    started = time.monotonic()
    set_node_ready(kubectl, node, False)
    try:
        moved = wait_for(
            lambda: (
                (s := status(kubectl, jobs_namespace, "move")).get("attempts") == 2
                and s.get("phase") in ("Placed", "Running")
                and s
            ),
            timeout=20 + 15,  # pendingTimeout + 15 s
            what="the job to be placed again",
        )
    finally:
        set_node_ready(kubectl, node, True)
    assert moved["pool"] != first
    assert time.monotonic() - started < 35
    assert moved["placements"][0]["outcome"] == "NodeNotReady"
    assert "llamaop_failovers_total" in operator.metrics()


def test_a_failing_worker_is_retried_then_the_job_fails(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    kubectl.apply(llamajob("flaky", families=("cpu",), backoffLimit=1), jobs_namespace)
    wait_phase(kubectl, jobs_namespace, "flaky", "Running")
    end_workers(kubectl, jobs_namespace, "flaky", 3)
    wait_for(lambda: status(kubectl, jobs_namespace, "flaky").get("attempts") == 2, what="a retry")
    wait_phase(kubectl, jobs_namespace, "flaky", "Running")
    end_workers(kubectl, jobs_namespace, "flaky", 3)
    st = wait_phase(kubectl, jobs_namespace, "flaky", "Failed")
    assert st["reason"] == "BackoffLimitExceeded"
    assert [p["outcome"] for p in st["placements"]] == ["WorkerFailed", "WorkerFailed"]


def test_progress_from_rank_zero_shows_in_the_job(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    kubectl.apply(llamajob("prog", families=("cpu",)), jobs_namespace)
    wait_phase(kubectl, jobs_namespace, "prog", "Running")
    (pod,) = worker_pods(kubectl, jobs_namespace, "prog")
    progress = {"step": 40, "totalSteps": 100, "loss": 3.21, "tokensPerSecond": 512.0}
    kubectl.run("annotate", "pod", pod["metadata"]["name"], "-n", jobs_namespace,
                f"llamaop.io/progress={json.dumps(progress)}", "--overwrite")  # fmt: skip
    st = wait_for(lambda: status(kubectl, jobs_namespace, "prog").get("progress"), what="progress in status")
    assert (st["step"], st["percent"], st["loss"]) == (40, 40, 3.21)
    table = kubectl.run("get", "lj", "prog", "-n", jobs_namespace).stdout
    assert "40" in table


def test_a_finished_job_teaches_its_pool_its_speed(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    """Rank 0 reports 80% of the estimated tokens/s; when the job succeeds the pool learns a factor
    below 1 for training in bf16 (planning/learning.py), and the next estimate there is slower."""
    kubectl.apply(llamajob("teach", families=("cpu",)), jobs_namespace)
    placed = wait_phase(kubectl, jobs_namespace, "teach", "Running")
    chosen = next(c for c in placed["candidates"] if c["verdict"] == "Chosen")
    pool = placed["pool"]

    def learned() -> list[dict[str, Any]]:
        st = kubectl.json("get", "acceleratorpool", pool).get("status", {})
        return [e for e in st.get("learnedSpeeds", []) if (e["mode"], e["precision"]) == ("train", "bf16")]

    runs_before = sum(e["runs"] for e in learned())
    (pod,) = worker_pods(kubectl, jobs_namespace, "teach")
    progress = {
        "step": 100,
        "totalSteps": 100,
        "loss": 3.0,
        "tokensPerSecond": 0.8 * chosen["tokensPerSecond"],
    }
    kubectl.run("annotate", "pod", pod["metadata"]["name"], "-n", jobs_namespace,
                f"llamaop.io/progress={json.dumps(progress)}", "--overwrite")  # fmt: skip
    wait_for(lambda: status(kubectl, jobs_namespace, "teach").get("progress"), what="progress in status")
    end_workers(kubectl, jobs_namespace, "teach", 0)
    wait_phase(kubectl, jobs_namespace, "teach", "Succeeded")
    (entry,) = wait_for(lambda: [e for e in learned() if e["runs"] > runs_before], what="learnedSpeeds")
    assert entry["factor"] < 1.0
    kubectl.apply(llamajob("after", families=("cpu",), pools=(pool,)), jobs_namespace)
    after = wait_phase(kubectl, jobs_namespace, "after", "Placed", "Running")
    row = next(c for c in after["candidates"] if c["verdict"] == "Chosen")
    assert row["tokensPerSecond"] < chosen["tokensPerSecond"]


def test_suspend_removes_workers_and_resume_places_again(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    kubectl.apply(llamajob("pause", families=("cpu",)), jobs_namespace)
    wait_phase(kubectl, jobs_namespace, "pause", "Running")
    kubectl.run(
        "patch", "lj", "pause", "-n", jobs_namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_phase(kubectl, jobs_namespace, "pause", "Suspended")
    wait_for(lambda: not worker_pods(kubectl, jobs_namespace, "pause"), what="workers removed")
    kubectl.run(
        "patch", "lj", "pause", "-n", jobs_namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    assert wait_phase(kubectl, jobs_namespace, "pause", "Placed", "Running")["attempts"] == 2


@pytest.mark.parametrize(
    ("spec_patch", "message"),
    [
        ({"mode": "train", "training": None}, "spec.training is required when mode is train"),
        ({"resources": {"families": ["any", "neuron"]}}, "'any' cannot be combined"),
        ({"model": {"preset": "llama9"}}, "Unsupported value"),
        ({"training": {"steps": 0}}, "should be greater than or equal to 1"),
    ],
)
def test_invalid_specs_are_refused_by_the_api_server_with_the_reason(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str, spec_patch: dict[str, Any], message: str
) -> None:
    job = llamajob("bad")
    for key, value in spec_patch.items():
        if value is None:
            job["spec"].pop(key, None)
        elif isinstance(value, dict) and isinstance(job["spec"].get(key), dict):
            job["spec"][key] = {**job["spec"][key], **value}
        else:
            job["spec"][key] = value
    if spec_patch.get("training") is None and "training" in spec_patch:
        job["spec"].pop("training", None)
    proc = kubectl.run("apply", "-n", jobs_namespace, "-f", "-", stdin=json.dumps(job), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_deleting_the_jobs_leaves_nothing_behind(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    kubectl.apply(llamajob("gone", families=("cpu",)), jobs_namespace)
    wait_phase(kubectl, jobs_namespace, "gone", "Running")
    kinds = "pods,services,serviceaccounts,roles,rolebindings"
    selector = "app.kubernetes.io/managed-by=llama-operator"
    assert kubectl.json("get", kinds, "-n", jobs_namespace, "-l", selector)["items"]
    kubectl.run("delete", "llamajobs", "--all", "-n", jobs_namespace)
    wait_for(
        lambda: not kubectl.json("get", kinds, "-n", jobs_namespace, "-l", selector)["items"],
        timeout=60,
        what="the garbage collector to remove every child",
    )


def test_three_sigkills_during_a_burst_of_200_jobs_on_pools_with_efa_and_foreign_usage(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    """200 jobs at once (single devices, EFA gangs on g5, p4d and p5) while other owners' pods hold GPUs,
    EFA, cpu and memory, and a DaemonSet runs on every node; the operator is SIGKILLed three times
    meanwhile. Afterwards: one attempt per job, no worker the scheduler refused for a resource, no node
    over any allocatable resource."""
    other = f"{jobs_namespace}-other"[:63]
    kubectl.run("create", "namespace", other)
    held = [foreign_pod(f"p5-{i}", {GPU: "4", EFA: "8"}, node=f"p5-48xl-spot-{i}") for i in range(2)]
    held += [
        foreign_pod(f"cpu-{i}", {"cpu": "10", "memory": "40Gi"}, node=f"cpu-m7i-od-{i}") for i in range(4)
    ]
    held += [foreign_pod("g5-efa", {EFA: "1", "cpu": "20"}, node="g5-12xl-spot-0")]
    held += [foreign_pod("g6e-mem", {"memory": "1400Gi"}, node="g6e-48xl-od-0")]
    # What every real node runs (CNI, kube-proxy, device plugins): a DaemonSet asking a little of each.
    apply_all(kubectl, [*held, pause_workload("DaemonSet", "node-agent", "250m", "256Mi")], other)
    nodes = len(kubectl.json("get", "nodes", "-l", "type=kwok")["items"])
    wait_for(lambda: len([p for p in pods(kubectl, other) if p["spec"].get("nodeName")]) == len(held) + nodes,
             timeout=90, what="other owners' pods bound")  # fmt: skip

    gangs = [("g5-12xl-spot", 2, 2)] * 30 + [("p4d-24xl-od", 4, 2)] * 5 + [("p5-48xl-spot", 4, 2)] * 5
    items = [train_job(f"g{i:03d}", pool=pool, devices=d, nodes=n) for i, (pool, d, n) in enumerate(gangs)]
    # pendingTimeout counts from the placement, operator downtime included: three restarts of ~10 s each on
    # a loaded 2-core machine would time out workers that simply were not created yet at 20 s.
    items += [llamajob(f"b{i:03d}", devices=1, pendingTimeout="2m") for i in range(200 - len(items))]
    burst = {"apiVersion": "v1", "kind": "List", "items": items}
    started = time.monotonic()
    kubectl.run("apply", "-n", jobs_namespace, "-f", "-", stdin=json.dumps(burst))
    for pause in (2, 4, 6):  # three crashes while the burst is being placed
        time.sleep(pause)
        operator.kill()
        operator.start()

    def converged() -> list[dict[str, Any]] | None:
        jobs = kubectl.json("get", "llamajobs", "-n", jobs_namespace)["items"]
        phases = [j.get("status", {}).get("phase") for j in jobs]
        reasons = [j.get("status", {}).get("reason") for j in jobs]
        settled = all(p in ("Placed", "Running", "Queued") for p in phases) and len(jobs) == 200
        waiting = all(r == "NoCapacity" for p, r in zip(phases, reasons, strict=True) if p == "Queued")
        return jobs if settled and waiting and "Placed" not in phases else None

    try:
        jobs = wait_for(converged, timeout=300, interval=2, what="200 jobs to settle")
        settle = time.monotonic() - started
        workers = [p for p in kubectl.json("get", "pods", "-n", jobs_namespace)["items"]
                   if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        by_job: dict[str, set[str]] = defaultdict(set)
        for pod in workers:
            by_job[pod["metadata"]["labels"]["llamaop.io/job"]].add(
                pod["metadata"]["labels"]["llamaop.io/attempt"]
            )
        assert all(len(attempts) == 1 for attempts in by_job.values()), "one set of workers per job"
        running = {j["metadata"]["name"] for j in jobs if j["status"]["phase"] == "Running"}
        assert running == set(by_job), "every running job has its workers, and only those do"
        attempts = Counter(j["status"].get("attempts") or 0 for j in jobs)
        assert set(attempts) <= {0, 1}, f"a job was placed more than once: {attempts}"
        ended = Counter(
            p.get("outcome") for j in jobs for p in j["status"].get("placements") or () if p.get("ended")
        )
        assert attempts[1] == len(running) and not ended, f"attempts that ended: {dict(ended)}"
        waits = pending_for_resources(kubectl, jobs_namespace)
        report = {
            "jobs": len(jobs), "placed": len(running), "queued": len(jobs) - len(running),
            "gangs_placed": sum(n.startswith("g") for n in running), "settle_seconds": round(settle, 1),
            "pending_for_a_resource": len(waits), "pending_seconds": sorted(waits.values()),
            "nodes": nodes, "other_pods": len(held) + nodes,
        }  # fmt: skip
        print("CHAOS", json.dumps(report))
        if os.environ.get("LLAMAOP_CHAOS_REPORT"):
            Path(os.environ["LLAMAOP_CHAOS_REPORT"]).write_text(json.dumps(report) + "\n")
        assert not waits, f"workers the scheduler refused for a resource (s waited): {waits}"
        assert not overbooked(kubectl)
        assert operator.samples().get("llamaop_unschedulable_pods_total", 0) == 0
    finally:
        delete_and_wait(kubectl, other, "daemonsets")
        delete_and_wait(kubectl, other, "pods")
        kubectl.run("delete", "namespace", other, "--wait=false", check=False)
