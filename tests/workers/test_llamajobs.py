"""The mission's end to end: apply a LlamaJob, the operator places it, and CPU workers on a real kubelet
really train (torchrun over the headless Service, checkpoints on a volume, progress in the job) and serve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube import Kubectl, llamajob_manifest, wait_for
from tests.operator_harness import Operator
from tests.workers.node import NODE, POOL, TOLERATIONS, checkpoint_volume, python, wait_pod_done, worker_pod

pytestmark = pytest.mark.workers

STEPS = 100

POOL_MANIFEST = {
    "apiVersion": "llamaop.io/v1alpha1",
    "kind": "AcceleratorPool",
    "metadata": {"name": POOL},
    # `local` comes from tests/workers/catalog-local.yaml, which the test operator loads (--catalog).
    "spec": {"nodeSelector": {"llamaop.io/pool": POOL}, "instanceType": "local", "tolerations": TOLERATIONS},
}


@pytest.fixture(scope="module")
def local_pool(workers_env: dict[str, str], kubectl: Kubectl, operator: Operator) -> Iterator[str]:
    kubectl.apply(POOL_MANIFEST)
    yield POOL
    kubectl.run("delete", "acceleratorpool", POOL, check=False)


def training_job(name: str, steps: int, claim: str) -> dict[str, Any]:
    return llamajob_manifest(
        name,
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {
                "steps": steps,
                "sequenceLength": 64,
                "batchSize": 8,
                "learningRate": 0.001,
                "precision": "fp32",
                "checkpoint": {"uri": f"pvc://{claim}/{name}", "interval": 20},
            },
            "resources": {"families": ["cpu"], "nodes": 2, "devicesPerNode": 1},
            "placement": {"pools": [POOL], "pendingTimeout": "3m", "backoffLimit": 2},
        },
    )


def status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return kubectl.json("get", "llamajob", name, "-n", ns).get("status", {})


def pods(kubectl: Kubectl, ns: str, job: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "pods", "-n", ns, "-l", f"llamaop.io/job={job}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def checkpoints(backing: Path, job: str) -> list[Path]:
    return sorted(p for p in (backing / job).rglob("*.safetensors"))


def log_events(kubectl: Kubectl, ns: str, pod: str) -> list[dict[str, Any]]:
    """The runtime's JSON log lines of a pod (one object per line)."""
    out = kubectl.run("logs", pod, "-n", ns, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_two_pod_training_job_survives_a_worker_deletion_by_resuming_and_succeeds(
    kubectl: Kubectl, local_pool: str, restricted_namespace: str, workers_env: dict[str, str]
) -> None:
    ns = restricted_namespace
    backing = checkpoint_volume(workers_env, ns, "ckpt")
    kubectl.apply(training_job("tj", STEPS, "ckpt"), ns)

    running = wait_for(
        lambda: (
            len(p := pods(kubectl, ns, "tj")) == 2
            and all(x["status"].get("phase") == "Running" for x in p)
            and p
        ),
        timeout=180,
        what="both worker pods Running on the real node",
    )
    assert {p["spec"]["nodeName"] for p in running} == {NODE}
    # Both ranks meet at rank 0's name under the headless Service (resolved by the cluster DNS).
    rank1 = next(p for p in running if p["metadata"]["labels"]["llamaop.io/rank"] == "1")
    assert "--master_addr=tj-a1-0.tj-a1-rdzv" in " ".join(rank1["spec"]["containers"][0]["command"])

    # Mid-run (checkpoints every 20 of 100 steps), a worker pod goes away.
    wait_for(lambda: checkpoints(backing, "tj"), timeout=300, interval=1, what="a first checkpoint")
    assert status(kubectl, ns, "tj")["phase"] == "Running"
    kubectl.run("delete", "pod", "tj-a1-1", "-n", ns, "--grace-period=1", "--wait=false")
    st = wait_for(
        lambda: (s := status(kubectl, ns, "tj")).get("attempts") == 2 and s.get("phase") == "Running" and s,
        timeout=240,
        interval=2,
        what="a second attempt running",
    )
    assert st["placements"][0]["outcome"] in ("WorkerLost", "WorkerFailed")
    resumed = wait_for(
        lambda: next((e for e in log_events(kubectl, ns, "tj-a2-0") if e.get("event") == "resumed"), None),
        timeout=180,
        interval=2,
        what="the new attempt to resume from the checkpoint",
    )
    assert resumed["step"] >= 20, resumed

    st = wait_for(lambda: (s := status(kubectl, ns, "tj")).get("phase") in ("Succeeded", "Failed") and s,
                  timeout=420, interval=2, what="the job to finish")  # fmt: skip
    assert st["phase"] == "Succeeded", st
    assert st["attempts"] == 2
    assert st["progress"]["step"] == st["progress"]["totalSteps"] == STEPS
    assert st["progress"]["tokensPerSecond"] > 0
    # Well below ln(512) = 6.24, the loss of a uniform guess over the byte vocabulary it started from.
    assert 0 < st["progress"]["loss"] < math.log(512) - 0.5
    assert "100" in kubectl.run("get", "lj", "tj", "-n", ns).stdout.splitlines()[1].split()
    # Checkpoints on the claim (step-NNN directories), the last one at the final step.
    saved = {int(p.parent.name.rpartition("-")[2]) for p in checkpoints(backing, "tj")}
    assert max(saved) == STEPS, saved


def test_an_inference_job_becomes_ready_and_answers_completions_through_its_service(
    kubectl: Kubectl, local_pool: str, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    job = llamajob_manifest(
        "srv",
        {
            "mode": "inference",
            "model": {"preset": "tiny"},
            "inference": {"replicas": 1, "maxBatch": 4, "contextLength": 256, "maxNewTokens": 16},
            "resources": {"families": ["cpu"]},
            "placement": {"pools": [POOL]},
        },
    )
    kubectl.apply(job, ns)
    wait_for(lambda: status(kubectl, ns, "srv").get("phase") == "Running", timeout=240, interval=2,
             what="a ready replica")  # fmt: skip
    port = kubectl.json("get", "service", "srv", "-n", ns)["spec"]["ports"][0]["port"]
    # A client in the cluster, by the Service's name: cluster DNS, kube-proxy and the pod network as any
    # caller meets them (and the only way in on kind, whose Service IPs this machine cannot reach).
    client = f"""
        import json, time, urllib.request
        body = json.dumps({{"model": "tiny", "prompt": "Hello", "max_tokens": 8}}).encode()
        deadline = time.time() + 60
        while True:
            req = urllib.request.Request("http://srv:{port}/v1/completions", data=body,
                                         headers={{"Content-Type": "application/json"}})
            try:
                print(urllib.request.urlopen(req, timeout=20).read().decode(), flush=True)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(2)
    """
    kubectl.apply(worker_pod("client", python(client)), ns)
    pod = wait_pod_done(kubectl, ns, "client", timeout=180)
    assert pod["status"]["phase"] == "Succeeded", f"{pod['status']}\n--- logs ---\n{pod['logs']}"
    answer = json.loads(pod["logs"].strip().splitlines()[-1])
    assert answer["choices"][0]["text"] is not None
    assert answer["usage"]["completion_tokens"] >= 1
