"""The real node of the workers tier (hack/workers/node.sh): its names, and helpers for tests that run
real pods on it.

A pod lands on the node with `NODE_SELECTOR` and `TOLERATIONS` (the node is tainted so that the cluster
tier's kwok pods never reach a real kubelet), uses `CPU_WORKER_IMAGE` with imagePullPolicy
IfNotPresent or Never (nothing can be pulled), and gets a checkpoint volume from `checkpoint_volume`.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from tests.kube import ROOT, Kubectl, wait_for

NODE_SH = ROOT / "hack" / "workers" / "node.sh"
NODE = os.environ.get("LLAMAOP_WORKER_NODE", "llamaop-worker")
POOL_LABEL = "llamaop.io/pool"
POOL = "cpu-local"
NODE_SELECTOR = {POOL_LABEL: POOL}
TAINT_KEY = "llamaop.io/real-node"
TOLERATIONS = [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]


def _images() -> dict[str, str]:
    lines = (ROOT / "hack/workers/images.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


CPU_WORKER_IMAGE = _images()["CPU_WORKER_IMAGE"]
PAUSE_IMAGE = _images()["PAUSE_IMAGE"]

# What Pod Security's `restricted` level asks of every container; the worker image runs as UID 1000.
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def cannot_run_containers() -> str | None:
    """Why this machine cannot run the real node at all, or None. Anything else that fails is a failure."""
    if platform.system() != "Linux":
        return f"needs Linux, this is {platform.system()}"
    if os.geteuid() != 0:
        return "needs root (containerd, kubelet and the pod network)"
    cgroup = Path("/sys/fs/cgroup")
    if not (cgroup / "cgroup.controllers").exists() and not (cgroup / "memory").is_dir():
        return "no cgroup file system at /sys/fs/cgroup"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay file system (containerd's snapshotter)"
    if not shutil.which("apt-get") and not shutil.which("containerd"):
        return "neither containerd nor apt-get (to install Debian's) is here"
    return None


def python(script: str) -> list[str]:
    """The command that runs `script` (indented as in the test) with the image's python3."""
    return ["python3", "-c", textwrap.dedent(script)]


def worker_pod(
    name: str,
    command: list[str],
    *,
    image: str = CPU_WORKER_IMAGE,
    resources: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A restricted-compliant pod that runs `command` once on the real node."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "securityContext": RESTRICTED_CONTAINER,
    }
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": NODE_SELECTOR,
            "tolerations": TOLERATIONS,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"fsGroup": 1000},
            "containers": [container],
            **spec,
        },
    }


def wait_pod_done(kubectl: Kubectl, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until the pod Succeeded or Failed; the returned pod's logs are in `pod["logs"]`."""

    def done() -> dict[str, Any] | None:
        pod = kubectl.json("get", "pod", name, "-n", namespace)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = wait_for(done, timeout=timeout, interval=0.5, what=f"pod {namespace}/{name} to finish")
    pod["logs"] = kubectl.run("logs", name, "-n", namespace, check=False).stdout
    return pod


def set_extended_resources(env: dict[str, str], counts: dict[str, int]) -> None:
    """Patch the node's status with extended resources, e.g. {"nvidia.com/gpu": 8}; 0 removes one."""
    _node_sh(env, "resources", *(f"{k}={v}" for k, v in counts.items()))


def checkpoint_volume(env: dict[str, str], namespace: str, claim: str, size: str = "1Gi") -> Path:
    """A PersistentVolumeClaim `claim` in `namespace`, bound to a local volume on the real node (restricted
    pods cannot mount hostPath). Returns the directory on this machine that backs it."""
    return Path(_node_sh(env, "volume", namespace, claim, size).strip())


def _node_sh(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(NODE_SH), *args], env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"hack/workers/node.sh {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout
