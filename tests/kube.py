"""Small helpers the cluster-facing test tiers share: kubectl, waiting, and the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"

T = TypeVar("T")


def llamajob_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A LlamaJob manifest without a namespace (the caller's kubectl gives it one)."""
    return {"apiVersion": "llamaop.io/v1alpha1", "kind": "LlamaJob", "metadata": {"name": name}, "spec": spec}


def local_cluster_env() -> dict[str, str]:
    """PATH with the cluster binaries and KUBECONFIG of the local cluster, as cluster.sh reports."""
    line = subprocess.run([str(CLUSTER_SH), "env"], check=True, capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for assignment in line.removeprefix("export ").split():
        key, _, value = assignment.partition("=")
        env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 60, interval: float = 0.25, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Kubectl:
    """Runs the cluster's own kubectl against one kubeconfig."""

    def __init__(self, kubeconfig: str, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, **(env or {}), "KUBECONFIG": kubeconfig}

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args], input=stdin, env=self.env, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str | dict[str, Any], namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        self.run("apply", *ns, "-f", "-", stdin=text)


NOT_READY_LABEL = "kwok.llamaop.io/not-ready"  # read by hack/cluster/stages.yaml


def node_ready(kubectl: Kubectl, node: str) -> str:
    conds = kubectl.json("get", "node", node)["status"].get("conditions", [])
    return next((c["status"] for c in conds if c["type"] == "Ready"), "")


def set_node_ready(kubectl: Kubectl, node: str, ready: bool, timeout: float = 60) -> None:
    """Make a kwok node NotReady (or Ready again) and wait until its status says so.

    kwok can sit on a node's label change while a delayed heartbeat stage is pending; each poll
    touches an annotation, a fresh event that makes it look at the node again.
    """
    change = f"{NOT_READY_LABEL}-" if ready else f"{NOT_READY_LABEL}=true"
    kubectl.run("label", "node", node, change, "--overwrite")
    polls = iter(range(1_000_000))

    def reached() -> bool:
        if node_ready(kubectl, node) == ("True" if ready else "False"):
            return True
        kubectl.run("annotate", "node", node, f"kwok.llamaop.io/poke={next(polls)}", "--overwrite")
        return False

    wait_for(reached, timeout=timeout, interval=1, what=f"{node} {'Ready' if ready else 'NotReady'}")
