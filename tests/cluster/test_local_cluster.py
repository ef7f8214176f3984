"""Proof that the local cluster's parts are real: scheduler, controllers, GC and node lifecycle."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.kube import ROOT, Kubectl, node_ready, set_node_ready, wait_for

pytestmark = pytest.mark.cluster

NEURON = "aws.amazon.com/neuron"
EXIT_CODE = "kwok.llamaop.io/exit-code"  # read by hack/cluster/stages.yaml


def neuron_pod(name: str, devices: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"node.kubernetes.io/instance-type": "trn1.32xlarge"},
            "tolerations": [{"key": NEURON, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "worker",
                    "image": "llama-worker:test",
                    "resources": {"requests": {NEURON: str(devices)}, "limits": {NEURON: str(devices)}},
                }
            ],
        },
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_binaries_report_their_pinned_version(cluster_env: dict[str, str], kubectl: Kubectl) -> None:
    pinned = _pinned_versions()
    server = kubectl.json("version")["serverVersion"]
    if os.environ.get("LLAMAOP_TEST_KUBECONFIG") and server["gitVersion"] != f"v{pinned['K8S_VERSION']}":
        # kind's own node image, say: its binaries are not this machine's (the offline one's are).
        pytest.skip(f"the cluster under test runs {server['gitVersion']} from images of its own")
    assert server["gitVersion"] == f"v{pinned['K8S_VERSION']}"
    for binary in ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubelet"):
        out = subprocess.run([binary, "--version"], env=cluster_env, capture_output=True, text=True).stdout
        assert out.strip() == f"Kubernetes v{pinned['K8S_VERSION']}", binary
    etcd = subprocess.run(["etcd", "--version"], env=cluster_env, capture_output=True, text=True).stdout
    assert f"etcd Version: {pinned['ETCD_VERSION']}" in etcd


def test_scheduler_binds_16_neuron_devices_to_a_trn1_node(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(neuron_pod("fits", 16), namespace)

    def running() -> dict[str, Any] | None:
        pod = kubectl.json("get", "pod", "fits", "-n", namespace)
        return pod if pod["status"].get("phase") == "Running" else None

    pod = wait_for(running, what="pod Running")
    node = kubectl.json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "trn1.32xlarge"
    assert condition(pod, "PodScheduled")["status"] == "True"


def test_17_neuron_devices_stay_pending_unschedulable(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(neuron_pod("too-big", 17), namespace)

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(kubectl.json("get", "pod", "too-big", "-n", namespace), "PodScheduled")
        return cond if cond and cond.get("reason") == "Unschedulable" else None

    cond = wait_for(unschedulable, what="PodScheduled=False/Unschedulable")
    assert cond["status"] == "False"
    assert NEURON in cond["message"]
    assert kubectl.json("get", "pod", "too-big", "-n", namespace)["status"]["phase"] == "Pending"


def test_controller_manager_runs_a_job_to_success_and_gc_removes_its_pods(
    kubectl: Kubectl, namespace: str
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "done"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {EXIT_CODE: "0", "kwok.llamaop.io/run-for": "1s"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"llamaop.io/pool": "cpu-m7i-od"},
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            },
        },
    }
    kubectl.apply(job, namespace)

    def complete() -> dict[str, Any] | None:
        j = kubectl.json("get", "job", "done", "-n", namespace)
        return j if (condition(j, "Complete") or {}).get("status") == "True" else None

    finished = wait_for(complete, timeout=90, what="Job Complete")
    assert finished["status"]["succeeded"] == 2
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "job-name=done")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded", "Succeeded"]

    kubectl.run("delete", "job", "done", "-n", namespace, "--cascade=background")
    wait_for(
        lambda: not kubectl.json("get", "pods", "-n", namespace, "-l", "job-name=done")["items"],
        timeout=60,
        what="garbage collector to delete the Job's pods",
    )


def test_a_failing_pod_reports_its_exit_code(kubectl: Kubectl, namespace: str) -> None:
    pod = neuron_pod("crash", 1)
    pod["metadata"]["annotations"] = {EXIT_CODE: "137", "kwok.llamaop.io/reason": "OOMKilled"}
    kubectl.apply(pod, namespace)

    def failed() -> dict[str, Any] | None:
        p = kubectl.json("get", "pod", "crash", "-n", namespace)
        return p if p["status"].get("phase") == "Failed" else None

    state = wait_for(failed, what="pod Failed")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (137, "OOMKilled")


def test_a_node_goes_not_ready_and_recovers(kubectl: Kubectl) -> None:
    node = "cpu-m7i-od-3"
    try:
        set_node_ready(kubectl, node, False)
        # The real node lifecycle controller reacts to the status by tainting the node.
        wait_for(
            lambda: any(
                t["key"] == "node.kubernetes.io/not-ready"
                for t in kubectl.json("get", "node", node)["spec"].get("taints", [])
            ),
            what="node-lifecycle controller's not-ready taint",
        )
    finally:
        set_node_ready(kubectl, node, True)
    assert node_ready(kubectl, node) == "True"


def _pinned_versions() -> dict[str, str]:
    lines = (ROOT / "hack/cluster/versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
