"""Every pod the project creates meets the restricted Pod Security Standard, checked on the rendered
manifests: the operator's from `helm template`, the workers' from llama_operator.workers. The cluster tier
(tests/cluster/test_helm*.py) has the real PodSecurity admission judge the same pods.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from llama_operator.workers import (
    GPU_RESOURCE,
    NEURON_RESOURCE,
    TRN1,
    TRN2,
    WorkerPlan,
    render_pods,
)
from tests.unit.test_chart import helm_binary, one, render

pytestmark = pytest.mark.unit

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted, latest)
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the restricted standard refuses in `pod_spec`, plus our own rule: a read-only root."""
    bad: list[str] = []
    pod_sc = pod_spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            bad.append(flag)
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {volume['name']}: {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    if pod_sc.get("sysctls"):
        bad.append("sysctls")
    containers = [
        *pod_spec.get("initContainers", []),
        *pod_spec.get("containers", []),
        *pod_spec.get("ephemeralContainers", []),
    ]
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        if not (sc.get("runAsNonRoot") is True or pod_sc.get("runAsNonRoot") is True):
            bad.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser") == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds {caps['add']}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem")
    return bad


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def test_the_checker_catches_a_root_pod() -> None:
    root = {"containers": [{"name": "c", "securityContext": {"runAsUser": 0}}], "hostNetwork": True}
    found = restricted_violations(root)
    assert {"hostNetwork", "c: runAsUser 0", "c: capabilities must drop ALL"} <= set(found)


@pytest.mark.parametrize(
    "values",
    [(), ("peering.enabled=true",), ("runAsUser=2000", "runAsGroup=2000", "extraArgs[0]=--log-level=DEBUG")],
    ids=["defaults", "peering", "overrides"],
)
def test_operator_pod_is_restricted(helm: Path, values: tuple[str, ...]) -> None:
    spec = one(render(helm, *values), "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(spec) == []
    assert spec["securityContext"]["runAsUser"] != 0
    # The read-only root needs one writable place for Python's and kopf's temporary files.
    mounts = spec["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "tmp", "mountPath": "/tmp"}]


def worker_plans() -> dict[str, WorkerPlan]:
    common: dict[str, Any] = {"namespace": "team", "uid": str(uuid.uuid4()), "model": "llama3-8b"}
    return {
        "cpu-train": WorkerPlan(
            job_name="cpu",
            mode="train",
            backend="cpu",
            pool="cpu-m7i-od",
            image="w:cpu",
            node_names=("n0", "n1"),
            checkpoint_uri="pvc://ckpt/run",
            model_dir="pvc://weights/llama",
            data_dir="pvc://corpus/text",
            **common,
        ),
        "trn1-train": WorkerPlan(
            job_name="trn1",
            mode="train",
            backend="neuron",
            pool="trn1-32xl-od",
            image="w:neuron",
            node_names=("n0", "n1", "n2", "n3"),
            devices_per_pod=16,
            resource_name=NEURON_RESOURCE,
            neuron=TRN1,
            efa_per_pod=8,
            **common,
        ),
        "trn2-train": WorkerPlan(
            job_name="trn2",
            mode="train",
            backend="neuron",
            pool="trn2-48xl-cb",
            image="w:neuron",
            node_names=("n0",),
            devices_per_pod=16,
            resource_name=NEURON_RESOURCE,
            neuron=TRN2,
            **common,
        ),
        "gpu-serve": WorkerPlan(
            job_name="serve",
            mode="inference",
            backend="cuda",
            pool="p5-48xl-spot",
            image="w:cuda",
            node_names=("n0", "n0", "n1"),
            devices_per_pod=8,
            resource_name=GPU_RESOURCE,
            **common,
        ),
    }


@pytest.mark.parametrize("which", sorted(worker_plans()))
def test_worker_pods_are_restricted(which: str) -> None:
    pods = render_pods(worker_plans()[which])
    assert pods
    for pod in pods:
        assert restricted_violations(pod["spec"]) == [], pod["metadata"]["name"]
