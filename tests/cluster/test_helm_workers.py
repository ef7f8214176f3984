"""Worker pods as llama_operator.workers renders them, judged by the real PodSecurity admission of a
namespace that enforces the restricted standard; and the per-job identity that rank 0 patches its
progress annotation with may touch nothing but that job's pods.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from llama_operator.workers import (
    GPU_RESOURCE,
    NEURON_RESOURCE,
    TRN1,
    Toleration,
    WorkerPlan,
    render_worker_objects,
    service_account_name,
    worker_pod_names,
)
from tests.kube import Kubectl

pytestmark = pytest.mark.cluster

# Identity objects are created for real (pods name their ServiceAccount, and can-i needs the Role);
# the rest is only admitted with --dry-run=server, so nothing tries to run.
IDENTITY_KINDS = {"ServiceAccount", "Role", "RoleBinding"}


def plans(namespace: str) -> dict[str, WorkerPlan]:
    common: dict[str, Any] = {"namespace": namespace, "uid": str(uuid.uuid4()), "model": "tiny"}
    neuron_taint = Toleration(key=NEURON_RESOURCE, operator="Exists", effect="NoSchedule")
    return {
        "cpu-train": WorkerPlan(
            job_name="cpu-train",
            mode="train",
            backend="cpu",
            pool="cpu-m7i-od",
            image="llama-worker-cpu:test",
            node_names=("cpu-m7i-od-0", "cpu-m7i-od-1"),
            checkpoint_uri="pvc://checkpoints/cpu-train",
            data_dir="pvc://corpus/text",
            **common,
        ),
        "trn1-train": WorkerPlan(
            job_name="trn1-train",
            mode="train",
            backend="neuron",
            pool="trn1-32xl-od",
            image="llama-worker-neuron:test",
            node_names=("trn1-32xl-od-0", "trn1-32xl-od-1"),
            devices_per_pod=16,
            resource_name=NEURON_RESOURCE,
            neuron=TRN1,
            efa_per_pod=8,
            node_selector={"llamaop.io/pool": "trn1-32xl-od"},
            tolerations=(neuron_taint,),
            **common,
        ),
        "gpu-serve": WorkerPlan(
            job_name="gpu-serve",
            mode="inference",
            backend="cuda",
            pool="p5-48xl-spot",
            image="llama-worker-cuda:test",
            node_names=("p5-48xl-spot-0", "p5-48xl-spot-0"),
            devices_per_pod=8,
            resource_name=GPU_RESOURCE,
            **common,
        ),
    }


def without_owner(obj: dict[str, Any]) -> dict[str, Any]:
    """The LlamaJob owner does not exist here; the garbage collector would delete what names it."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}
    return {**obj, "metadata": meta}


def create_identity(kubectl: Kubectl, plan: WorkerPlan) -> list[dict[str, Any]]:
    """Creates the plan's ServiceAccount, Role and RoleBinding; returns the other objects."""
    objects = render_worker_objects(plan)
    identity = [without_owner(o) for o in objects if o["kind"] in IDENTITY_KINDS]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": identity}, plan.namespace)
    return [o for o in objects if o["kind"] not in IDENTITY_KINDS]


@pytest.mark.parametrize("which", ["cpu-train", "trn1-train", "gpu-serve"])
def test_worker_pods_are_admitted_under_restricted(
    kubectl: Kubectl, restricted_namespace: str, which: str
) -> None:
    plan = plans(restricted_namespace)[which]
    rest = create_identity(kubectl, plan)
    assert sum(o["kind"] == "Pod" for o in rest) == plan.replicas
    proc = kubectl.run(
        "apply", "--dry-run=server", "-n", plan.namespace, "-f", "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": rest}), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The namespace also warns on the restricted level: a clean pass prints no PodSecurity warning.
    assert "PodSecurity" not in proc.stderr, proc.stderr


def test_control_a_root_worker_is_refused(kubectl: Kubectl, restricted_namespace: str) -> None:
    """The same admission refuses a worker whose security context is taken away."""
    plan = plans(restricted_namespace)["cpu-train"]
    rest = create_identity(kubectl, plan)
    pod = next(o for o in rest if o["kind"] == "Pod")
    pod["spec"].pop("securityContext")
    pod["spec"]["containers"][0].pop("securityContext")
    proc = kubectl.run(
        "apply", "--dry-run=server", "-n", plan.namespace, "-f", "-", stdin=json.dumps(pod), check=False
    )
    assert proc.returncode != 0
    assert "violates PodSecurity" in proc.stderr


def test_job_identity_may_patch_only_its_own_pods(kubectl: Kubectl, restricted_namespace: str) -> None:
    all_plans = plans(restricted_namespace)
    plan, other = all_plans["cpu-train"], all_plans["trn1-train"]
    create_identity(kubectl, plan)
    create_identity(kubectl, other)
    own, theirs = worker_pod_names(plan), worker_pod_names(other)
    ns = ["-n", restricted_namespace]

    def can(sa: str, *what: str) -> bool:
        who = f"--as=system:serviceaccount:{restricted_namespace}:{sa}"
        return kubectl.run("auth", "can-i", *what, *ns, who, check=False).stdout.strip() == "yes"

    sa = service_account_name(plan.job_name)
    assert can(sa, "patch", f"pods/{own[0]}")
    assert can(sa, "get", f"pods/{own[1]}")
    refused = [
        ("patch", f"pods/{theirs[0]}"),
        ("delete", f"pods/{own[0]}"),
        ("list", "pods"),
        ("create", "pods"),
        ("patch", f"pods/{own[0]}", "--subresource=status"),
        ("get", "secrets"),
        ("patch", "llamajobs.llamaop.io"),
    ]
    allowed = [r for r in refused if can(sa, *r)]
    assert not allowed, f"{sa} may {allowed}"
    assert not can(service_account_name(other.job_name), "patch", f"pods/{own[0]}")
