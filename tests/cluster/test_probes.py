"""Probes on the real local cluster: kwok runs the probe pods, the test writes rank 0's progress annotation
as the runtime would (measured steps, tokens/s, start-up and compile time) or ends a probe with an exit
code, and the operator (SIGKILLed while probing) places the job by what was measured."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.kube import Kubectl, llamajob_manifest, wait_for
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

EXIT_CODE = "kwok.llamaop.io/exit-code"
POOLS = ("cpu-m7i-od", "trn1-32xl-od", "p4d-24xl-od")


def probed_job(name: str, **probe: Any) -> dict[str, Any]:
    return llamajob_manifest(
        name,
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {"steps": 200, "sequenceLength": 256, "batchSize": 64},
            "placement": {
                "pools": list(POOLS),
                "pendingTimeout": "60s",
                "probe": {"steps": 3, "warmupSteps": 1, "candidates": 3, "timeout": "5m", **probe},
            },
        },
    )


def status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return kubectl.json("get", "llamajob", name, "-n", ns).get("status", {})


def probe_pods(kubectl: Kubectl, ns: str, job: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "pods", "-n", ns, "-l", f"llamaop.io/job={job},llamaop.io/probe=true")[
        "items"
    ]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def learned_runs(kubectl: Kubectl, pool: str) -> int:
    st = kubectl.json("get", "acceleratorpool", pool).get("status", {})
    return sum(
        e["runs"] for e in st.get("learnedSpeeds", []) if (e["mode"], e["precision"]) == ("train", "bf16")
    )


def test_a_job_is_probed_on_each_family_and_placed_by_measured_cost_across_a_sigkill(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    ns = jobs_namespace
    runs_before = learned_runs(kubectl, "trn1-32xl-od")
    kubectl.apply(probed_job("probed"), ns)
    st = wait_for(
        lambda: (
            (s := status(kubectl, ns, "probed")).get("reason") == "Probing"
            and len(s.get("probes", [])) == 3
            and s
        ),
        timeout=60,
        what="three probes booked",
    )
    assert st["phase"] == "Queued"
    by_pool = {p["pool"]: p for p in st["probes"]}
    assert set(by_pool) == set(POOLS)
    operator.kill()  # between booking and measuring: the new process must neither lose nor repeat a probe
    operator.start()
    pods = wait_for(lambda: len(ps := probe_pods(kubectl, ns, "probed")) == 3 and ps,
                    timeout=60, what="one pod per probe")  # fmt: skip
    attempts = Counter(p["metadata"]["labels"]["llamaop.io/attempt"] for p in pods)
    assert sorted(attempts) == sorted(str(p["attempt"]) for p in by_pool.values()) and set(
        attempts.values()
    ) == {1}
    wait_for(
        lambda: all(p["phase"] == "Running" for p in status(kubectl, ns, "probed")["probes"]),
        timeout=60,
        what="probes running",
    )
    pod_of = {p["metadata"]["labels"]["llamaop.io/pool"]: p["metadata"]["name"] for p in pods}
    # cpu is the cheapest estimate but measures slow; trn1 measures fast; p4d's probe crashes.
    for pool, rate in (("cpu-m7i-od", 5000.0), ("trn1-32xl-od", 2_000_000.0)):
        progress = {"step": 4, "totalSteps": 4, "loss": 5.1, "tokensPerSecond": rate, "startupSeconds": 30.0,
                    "warmupSteps": 1, "compileSeconds": 40.0, "measuredSteps": 3,
                    "measuredTokensPerSecond": rate}  # fmt: skip
        kubectl.run("annotate", "pod", pod_of[pool], "-n", ns, f"llamaop.io/progress={json.dumps(progress)}",
                    "--overwrite")  # fmt: skip
    kubectl.run("annotate", "pod", pod_of["p4d-24xl-od"], "-n", ns, f"{EXIT_CODE}=1", "--overwrite")
    placed = wait_for(
        lambda: (s := status(kubectl, ns, "probed")).get("phase") in ("Placed", "Running") and s,
        timeout=90,
        what="placed after probing",
    )
    probes = {p["pool"]: p for p in placed["probes"]}
    assert probes["cpu-m7i-od"]["phase"] == "Measured" and probes["trn1-32xl-od"]["phase"] == "Measured"
    assert probes["p4d-24xl-od"]["phase"] == "Failed" and probes["p4d-24xl-od"]["reason"] == "WorkerFailed"
    assert probes["trn1-32xl-od"]["measuredTokensPerSecond"] == 2_000_000.0
    assert placed["pool"] == "trn1-32xl-od", placed["message"]
    assert placed["message"].startswith("by measured cost")
    assert placed["attempts"] == 4
    assert placed["accruedCost"] > 0 and all(p["cost"] > 0 for p in probes.values())
    wait_for(lambda: not probe_pods(kubectl, ns, "probed"), timeout=60, what="probe pods removed")
    workers = kubectl.json("get", "pods", "-n", ns, "-l", "llamaop.io/job=probed")["items"]
    assert {p["metadata"]["labels"]["llamaop.io/attempt"] for p in workers} <= {"4"}
    wait_for(lambda: learned_runs(kubectl, "trn1-32xl-od") > runs_before, timeout=60, what="trn1 learns")
    reasons = {e["reason"] for e in kubectl.json("get", "events", "-n", ns)["items"]}
    assert {"Probing", "ProbeMeasured", "ProbeFailed"} <= reasons


def test_a_probe_that_overruns_rules_its_pool_out_and_the_job_still_runs(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    ns = jobs_namespace
    kubectl.apply(probed_job("slow", candidates=1, timeout="10s"), ns)
    st = wait_for(
        lambda: (s := status(kubectl, ns, "slow")).get("phase") in ("Placed", "Running") and s,
        timeout=90,
        what="placed by estimate after the probe timed out",
    )
    (probe,) = st["probes"]
    assert probe["phase"] == "TimedOut" and probe["reason"] == "Timeout"
    assert st["pool"] != probe["pool"]
    assert st["message"].startswith("by estimate")
