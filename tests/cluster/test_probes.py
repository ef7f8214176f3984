"""Probes on the real local cluster: kwok runs the probe pods, the test writes rank 0's progress annotation
as the runtime would (measured steps, tokens/s, start-up and compile time) or ends a probe with an exit
code, and the operator (SIGKILLed while probing) places the job by what was measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.capacity import overbooked
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
    kubectl: Kubectl, operator: Operator, jobs_namespace: str, cluster_env: dict[str, str], tmp_path: Path
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
    operator.kill()  # while the results are being taken in: none may be lost, no attempt repeated
    operator.start()
    placed = wait_for(
        lambda: (s := status(kubectl, ns, "probed")).get("phase") in ("Placed", "Running") and s,
        timeout=90,
        what="placed after probing",
    )
    probes = {p["pool"]: p for p in placed["probes"]}
    assert probes["cpu-m7i-od"]["phase"] == "Measured" and probes["trn1-32xl-od"]["phase"] == "Measured"
    assert probes["p4d-24xl-od"]["phase"] == "Failed" and probes["p4d-24xl-od"]["reason"] == "WorkerFailed"
    assert probes["trn1-32xl-od"]["measuredTokensPerSecond"] == 2_000_000.0
    # The placement's own record: status.message moves on to "... running" once the pods are up.
    why = placed["placements"][-1]["message"]
    assert placed["pool"] == "trn1-32xl-od", why
    assert why.startswith("by measured cost"), why
    assert placed["attempts"] == 4
    assert placed["accruedCost"] > 0 and all(p["cost"] > 0 for p in probes.values())
    wait_for(lambda: not probe_pods(kubectl, ns, "probed"), timeout=60, what="probe pods removed")
    workers = kubectl.json("get", "pods", "-n", ns, "-l", "llamaop.io/job=probed")["items"]
    assert {p["metadata"]["labels"]["llamaop.io/attempt"] for p in workers} <= {"4"}
    # The pool learns the measurement exactly once across the SIGKILL: asked again until its learnedFrom
    # shows the probe's sample, never counted twice (docs/probes.md, restart safety).
    wait_for(lambda: learned_runs(kubectl, "trn1-32xl-od") > runs_before, timeout=60, what="trn1 learns")
    uid = kubectl.json("get", "lj", "probed", "-n", ns)["metadata"]["uid"]
    sample = f"{uid}/a{probes['trn1-32xl-od']['attempt']}"
    assert sample in kubectl.json("get", "acceleratorpool", "trn1-32xl-od")["status"]["learnedFrom"]
    time.sleep(5)
    assert learned_runs(kubectl, "trn1-32xl-od") == runs_before + 1
    # `llamaop report` reads the job from the cluster through the kubeconfig.
    chart = tmp_path / "probed.png"
    command = ["report", "probed", "-n", ns, "--json", "--chart", str(chart)]
    out = subprocess.run(
        [sys.executable, "-m", "llama_operator.cli", *command],
        env={**os.environ, **cluster_env}, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["chosen"] == "trn1-32xl-od" and chart.stat().st_size > 10_000
    rows = {r["pool"]: r for r in report["rows"]}
    assert (
        rows["trn1-32xl-od"]["chosen"] and rows["trn1-32xl-od"]["measured_tokens_per_second"] == 2_000_000.0
    )
    assert rows["p4d-24xl-od"]["probe_phase"] == "Failed"


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
    assert st["placements"][-1]["message"].startswith("by estimate")
    # Events are posted in the background (best effort); without a SIGKILL in between both are there.
    reasons = wait_for(
        lambda: (
            {"Probing", "ProbeTimedOut"}
            <= (r := {e["reason"] for e in kubectl.json("get", "events", "-n", ns)["items"]})
            and r
        ),
        timeout=30,
        what="the probe's events",
    )
    assert "Placed" in reasons


def measure_all(kubectl: Kubectl, ns: str, done: set[str]) -> None:
    """Rank 0 of every probe not measured yet reports 3 measured steps (faster on accelerators)."""
    selector = "llamaop.io/probe=true,llamaop.io/rank=0"
    for pod in kubectl.json("get", "pods", "-n", ns, "-l", selector)["items"]:
        name = pod["metadata"]["name"]
        if name in done or pod["metadata"].get("deletionTimestamp"):
            continue
        rate = 5e3 if pod["metadata"]["labels"]["llamaop.io/pool"].startswith("cpu") else 9e5
        progress = {"step": 4, "totalSteps": 4, "measuredSteps": 3, "warmupSteps": 1, "startupSeconds": 10,
                    "compileSeconds": 5, "tokensPerSecond": rate,
                    "measuredTokensPerSecond": rate}  # fmt: skip
        kubectl.run("annotate", "pod", name, "-n", ns, f"llamaop.io/progress={json.dumps(progress)}",
                    "--overwrite", check=False)  # fmt: skip
        done.add(name)


def test_a_burst_of_probed_jobs_across_sigkills_books_nothing_twice(
    kubectl: Kubectl, operator: Operator, jobs_namespace: str
) -> None:
    """30 probed jobs of 8 devices at once while the operator is SIGKILLed three times, then their probes
    measured while it is killed again: no node over its allocatable at any check, one set of pods per
    attempt, every job placed (or queued) by measured cost with attempts = its probes + its placement."""
    ns = jobs_namespace
    items = []
    for i in range(30):
        job = probed_job(f"b{i:02d}", candidates=2, timeout="4m")
        job["spec"]["placement"]["pools"] = []
        job["spec"]["resources"] = {"families": ["neuron", "nvidia"], "devicesPerNode": 8}
        items.append(job)
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    for pause in (2, 3, 4):
        time.sleep(pause)
        operator.kill()
        operator.start()
    assert not overbooked(kubectl)
    done: set[str] = set()

    def settled() -> list[dict[str, Any]] | None:
        measure_all(kubectl, ns, done)
        assert not overbooked(kubectl)
        jobs = kubectl.json("get", "llamajobs", "-n", ns)["items"]
        phases = [j.get("status", {}).get("phase") for j in jobs]
        probing = [j for j in jobs if j.get("status", {}).get("reason") == "Probing"]
        return (
            jobs
            if len(jobs) == 30 and not probing and all(p in ("Placed", "Running", "Queued") for p in phases)
            else None
        )

    time.sleep(5)
    operator.kill()  # while probes are being measured
    operator.start()
    jobs = wait_for(settled, timeout=300, interval=3, what="30 probed jobs to settle")
    attempts_seen: dict[str, set[str]] = defaultdict(set)
    for pod in kubectl.json("get", "pods", "-n", ns)["items"]:
        if not pod["metadata"].get("deletionTimestamp"):
            labels = pod["metadata"]["labels"]
            attempts_seen[labels["llamaop.io/job"]].add(labels["llamaop.io/attempt"])
    for j in jobs:
        st = j["status"]
        probes = st.get("probes", [])
        numbers = [p["attempt"] for p in probes]
        assert len(numbers) == len(set(numbers)), f"{j['metadata']['name']}: a probe attempt booked twice"
        if st["phase"] in ("Placed", "Running"):
            assert st["attempts"] == len(probes) + 1, st
            if probes:
                placed = st["placements"][-1]["message"]
                assert placed.startswith(("by measured cost", "by estimate")), placed
            # Only the real run's pods are left.
            assert attempts_seen[j["metadata"]["name"]] <= {str(st["attempts"])}
        measured = [p for p in probes if p["phase"] == "Measured"]
        assert all(p["measuredTokensPerSecond"] > 0 for p in measured)
    phases = Counter(j["status"]["phase"] for j in jobs)
    ended = Counter(p["phase"] for j in jobs for p in j["status"].get("probes", []))
    print(
        "PROBE-BURST", json.dumps({"jobs": dict(phases), "probes": dict(ended), "measured_pods": len(done)})
    )
    assert phases["Placed"] + phases["Running"] > 0
    assert not overbooked(kubectl)
