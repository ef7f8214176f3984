"""A probe really runs: the operator measures a training job on the real kubelet's CPU pool before placing
it, the runtime times its warm-up apart from the measured steps and writes them to rank 0's annotation, and
what it measured lands in the job's status.probes and in the pool's learnedSpeeds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube import Kubectl, llamajob_manifest, wait_for
from tests.workers.node import POOL
from tests.workers.test_llamajobs import local_pool, pods, status

pytestmark = pytest.mark.workers
__all__ = ["local_pool"]  # the pool fixture, shared with test_llamajobs


def learned(kubectl: Kubectl) -> list[dict[str, Any]]:
    st = kubectl.json("get", "acceleratorpool", POOL).get("status", {})
    return [e for e in st.get("learnedSpeeds", []) if (e["mode"], e["precision"]) == ("train", "fp32")]


def test_a_probe_runs_on_the_real_node_and_its_measured_speed_lands_in_status_and_the_pool(
    kubectl: Kubectl, local_pool: str, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    runs_before = sum(e["runs"] for e in learned(kubectl))
    job = llamajob_manifest(
        "pj",
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {"steps": 30, "sequenceLength": 64, "batchSize": 8, "precision": "fp32"},
            "resources": {"families": ["cpu"], "nodes": 1, "devicesPerNode": 1},
            "placement": {
                "pools": [local_pool],
                "pendingTimeout": "3m",
                "probe": {"steps": 4, "warmupSteps": 2, "timeout": "6m"},
            },
        },
    )
    kubectl.apply(job, ns)
    booked = wait_for(
        lambda: (s := status(kubectl, ns, "pj")).get("probes") and s, timeout=60, what="a probe"
    )
    assert booked["phase"] == "Queued" and booked["probes"][0]["pool"] == local_pool
    (probe_pod,) = wait_for(lambda: pods(kubectl, ns, "pj"), timeout=60, what="the probe pod")
    assert probe_pod["metadata"]["labels"]["llamaop.io/probe"] == "true"
    st = wait_for(
        lambda: (
            (s := status(kubectl, ns, "pj")).get("phase") in ("Placed", "Running", "Succeeded", "Failed")
            and s
        ),
        timeout=420,
        interval=2,
        what="the probe measured and the job placed",
    )
    (probe,) = st["probes"]
    keys = ("measuredTokensPerSecond", "estimatedTokensPerSecond", "startupSeconds", "compileSeconds", "cost")
    print("PROBE", json.dumps({k: probe.get(k) for k in keys}))
    assert probe["phase"] == "Measured", probe
    assert probe["measuredTokensPerSecond"] > 0 and probe["measuredSteps"] >= 4
    assert probe["startupSeconds"] > 0 and probe["compileSeconds"] >= 0
    # Charged: accruedCost (rounded to 1/100 cent) holds the probe's cost.
    assert probe["cost"] > 0 and st["accruedCost"] >= round(probe["cost"], 4)
    # The placement's own record: status.message moves on to "... running" once the pod is up.
    why = st["placements"][-1]["message"]
    assert st["pool"] == local_pool and st["attempts"] == 2 and why.startswith("by measured cost"), why
    entry = wait_for(lambda: sum(e["runs"] for e in learned(kubectl)) > runs_before and learned(kubectl),
                     timeout=60, what="the pool to learn the probe's speed")  # fmt: skip
    assert entry[0]["factor"] > 0
