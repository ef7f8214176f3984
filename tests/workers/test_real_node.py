"""Proof that the workers tier's node is real: a kubelet registered beside the kwok nodes, containerd and
runc running the CPU worker image, cluster DNS from CoreDNS, Services through kube-proxy, and the API
server reachable from a pod with its service-account token."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube import Kubectl, wait_for
from tests.workers.node import (
    NODE,
    POOL,
    POOL_LABEL,
    TAINT_KEY,
    checkpoint_volume,
    python,
    set_extended_resources,
    wait_pod_done,
    worker_pod,
)

# The first test pays for a cold machine's set-up (Debian packages, CoreDNS, the image): minutes.
pytestmark = [pytest.mark.workers, pytest.mark.usefixtures("workers_env"), pytest.mark.timeout(1800)]


def assert_succeeded(pod: dict[str, Any]) -> None:
    assert pod["status"]["phase"] == "Succeeded", f"{pod['status']}\n--- logs ---\n{pod['logs']}"
    assert pod["spec"]["nodeName"] == NODE


def test_node_registers_ready_beside_the_kwok_nodes(kubectl: Kubectl) -> None:
    node = kubectl.json("get", "node", NODE)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    info = node["status"]["nodeInfo"]
    version = kubectl.json("version")["serverVersion"]["gitVersion"]
    assert info["kubeletVersion"] == version  # a real kubelet, not kwok's fake one
    assert info["containerRuntimeVersion"].startswith("containerd://")
    labels = node["metadata"]["labels"]
    assert labels[POOL_LABEL] == POOL
    assert labels["node.kubernetes.io/instance-type"] == "local"
    assert labels["karpenter.sh/capacity-type"] == "on-demand"
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert any(t["key"] == TAINT_KEY for t in node["spec"]["taints"])
    # kwok still runs the fake pools (it keeps to the nodes annotated as fake).
    fake = kubectl.json("get", "nodes", "-l", "type=kwok")["items"]
    assert fake and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in fake
    )


def test_worker_image_imports_torch_and_the_runtime(kubectl: Kubectl, restricted_namespace: str) -> None:
    script = """
        import json, torch, torch.distributed as dist, transformers, llama_runtime
        print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                          "gloo": dist.is_available() and dist.is_gloo_available()}))
    """
    kubectl.apply(worker_pod("imports", python(script)), restricted_namespace)
    pod = wait_pod_done(kubectl, restricted_namespace, "imports")
    assert_succeeded(pod)
    versions = json.loads(pod["logs"].strip().splitlines()[-1])
    assert versions["gloo"] is True, versions


def test_pods_resolve_services_and_reach_each_other(kubectl: Kubectl, restricted_namespace: str) -> None:
    ns = restricted_namespace
    labels = {"app": "rdzv"}
    # A headless Service gives each worker a stable name (torchrun's rendezvous); a ClusterIP Service
    # goes through kube-proxy's rules to the same pod.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "workers"},
            "spec": {"clusterIP": "None", "selector": labels, "publishNotReadyAddresses": True},
        },
        ns,
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8000}]},
        },
        ns,
    )
    server = worker_pod(
        "worker-0",
        ["python3", "-m", "http.server", "8000"],
        labels=labels,
        hostname="worker-0",
        subdomain="workers",
    )
    kubectl.apply(server, ns)
    client = f"""
        import socket, time, urllib.request
        names = ["worker-0.workers", "worker-0.workers.{ns}.svc.cluster.local", "api", "api.{ns}.svc",
                 "kubernetes.default.svc"]
        deadline = time.time() + 60
        for name in names:
            while True:
                try:
                    print(name, socket.gethostbyname(name), flush=True)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
        while True:
            try:
                body = urllib.request.urlopen("http://api/", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        print("GET http://api/ ->", len(body), "bytes")
    """
    kubectl.apply(worker_pod("worker-1", python(client), hostname="worker-1", subdomain="workers"), ns)
    pod = wait_pod_done(kubectl, ns, "worker-1")
    assert_succeeded(pod)
    server_ip = kubectl.json("get", "pod", "worker-0", "-n", ns)["status"]["podIP"]
    assert f"worker-0.workers {server_ip}" in pod["logs"]
    api_ip = kubectl.json("get", "service", "api", "-n", ns)["spec"]["clusterIP"]
    assert f"api {api_ip}" in pod["logs"]
    assert "GET http://api/ ->" in pod["logs"]


def test_pod_reaches_the_api_server_with_its_service_account_token(
    kubectl: Kubectl, restricted_namespace: str
) -> None:
    # The in-cluster way every client uses: the kubernetes Service's IP, checked against the cluster CA.
    script = """
        import json, os, ssl, urllib.request
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        url = "https://{}:{}/apis/authentication.k8s.io/v1/selfsubjectreviews".format(
            os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
        body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Authorization": "Bearer " + open(sa + "/token").read(), "Content-Type": "application/json"})
        ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
        review = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
        print(review["status"]["userInfo"]["username"])
    """
    kubectl.apply(worker_pod("whoami", python(script)), restricted_namespace)
    pod = wait_pod_done(kubectl, restricted_namespace, "whoami")
    assert_succeeded(pod)
    assert pod["logs"].strip() == f"system:serviceaccount:{restricted_namespace}:default"


def test_gpu_placement_lands_a_real_cpu_pod_and_checkpoints_persist(
    workers_env: dict[str, str], kubectl: Kubectl, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    set_extended_resources(workers_env, {"nvidia.com/gpu": 2})
    try:
        backing = checkpoint_volume(workers_env, ns, "checkpoints")
        pod = worker_pod(
            "gpu-job",
            ["sh", "-c", "echo step-1 > /ckpt/latest && cat /ckpt/latest"],
            resources={"limits": {"nvidia.com/gpu": "1"}},
            volumes=[{"name": "ckpt", "persistentVolumeClaim": {"claimName": "checkpoints"}}],
        )
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "ckpt", "mountPath": "/ckpt"}]
        kubectl.apply(pod, ns)
        done = wait_pod_done(kubectl, ns, "gpu-job")
        assert_succeeded(done)
        assert (backing / "latest").read_text().strip() == "step-1"
    finally:
        set_extended_resources(workers_env, {"nvidia.com/gpu": 0})

    def gone() -> bool:
        node = kubectl.json("get", "node", NODE)
        return "nvidia.com/gpu" not in node["status"]["allocatable"]

    wait_for(gone, timeout=10, what="nvidia.com/gpu removed from the node")


def test_torchrun_rendezvous_across_two_pods_through_a_headless_service(
    kubectl: Kubectl, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    labels = {"app": "ddp"}
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ddp"},
            "spec": {"clusterIP": "None", "selector": labels, "publishNotReadyAddresses": True},
        },
        ns,
    )
    script = """
        import torch, torch.distributed as dist
        dist.init_process_group("gloo")
        t = torch.ones(1) * (dist.get_rank() + 1)
        dist.all_reduce(t)
        print("rank", dist.get_rank(), "of", dist.get_world_size(), "sum", int(t.item()))
        dist.destroy_process_group()
    """
    for rank in (0, 1):
        rendezvous = [f"--node-rank={rank}", "--master-addr=ddp-0.ddp", "--master-port=29500"]
        command = ["torchrun", "--nnodes=2", "--nproc-per-node=1", *rendezvous, "--no-python"]
        command += python(script)
        pod = worker_pod(f"ddp-{rank}", command, labels=labels, hostname=f"ddp-{rank}", subdomain="ddp")
        kubectl.apply(pod, ns)
    for rank in (0, 1):
        pod = wait_pod_done(kubectl, ns, f"ddp-{rank}", timeout=180)
        assert_succeeded(pod)
        assert f"rank {rank} of 2 sum 3" in pod["logs"], pod["logs"]
