"""Cluster-test helpers for capacity: pods of other owners, what the scheduler said, what nodes hold.

The checks here judge the operator by the cluster, not by its own code: requests are summed from the
pods' containers as the API server holds them, and refusals are what kube-scheduler itself reported.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from tests.kube import Kubectl, llamajob_manifest, wait_for
from tests.operator_harness import Operator

EXIT_CODE = "kwok.llamaop.io/exit-code"
GPU = "nvidia.com/gpu"
EFA = "vpc.amazonaws.com/efa"
RESOURCE_REASON = ("Insufficient ", "Too many pods")


@contextmanager
def without_other_operators() -> Iterator[None]:
    """Stop this session's running operators (they manage every namespace, so they would act on the jobs
    of an operator under test too) and start them again afterwards."""
    others = list(Operator.running)
    for other in others:
        other.stop()
    try:
        yield
    finally:
        for other in others:
            other.start()


def train_job(
    name: str, *, pool: str, devices: int, nodes: int, families: tuple[str, ...] = ("nvidia",)
) -> dict[str, Any]:
    """A small training LlamaJob pinned to one pool with a fixed shape (kwok runs its pods)."""
    return llamajob_manifest(
        name,
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {"steps": 100, "sequenceLength": 256, "batchSize": 64},
            "resources": {"families": list(families), "devicesPerNode": devices, "nodes": nodes},
            # Long: a job that times out and moves would hide a pod the scheduler refused.
            "placement": {"pools": [pool], "pendingTimeout": "30m"},
        },
    )


def foreign_pod(
    name: str,
    requests: Mapping[str, str],
    *,
    node: str | None = None,
    pool: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A pod the operator did not make, asking for `requests`, that kube-scheduler places on `node` (or
    anywhere in `pool`); it tolerates every taint, as DaemonSet and system pods do."""
    selector: dict[str, str] = {"type": "kwok"}
    if node:
        selector["kubernetes.io/hostname"] = node
    if pool:
        selector["llamaop.io/pool"] = pool
    resources = {"requests": dict(requests)}
    extended = {k: v for k, v in requests.items() if "/" in k}
    if extended:
        resources["limits"] = extended
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "foreign", **(labels or {})}},
        "spec": {
            "nodeSelector": selector,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": resources}],
        },
    }


def pause_workload(
    kind: str, name: str, cpu: str, memory: str, replicas: int | None = None
) -> dict[str, Any]:
    """A Deployment or DaemonSet of pause pods on the kwok nodes (any taint tolerated, like system pods)."""
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        },
    }  # fmt: skip
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": template}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def apply_all(kubectl: Kubectl, manifests: Iterable[dict[str, Any]], namespace: str) -> None:
    items = list(manifests)
    if items:
        kubectl.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                          "items": items}))  # fmt: skip


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or () if c.get("type") == kind), {})


def pods(kubectl: Kubectl, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", namespace] + (["-l", selector] if selector else [])
    return [p for p in kubectl.json(*args)["items"] if not p["metadata"].get("deletionTimestamp")]


def wait_bound(
    kubectl: Kubectl, namespace: str, selector: str = "", timeout: float = 60, *, some: bool = True
) -> list[dict[str, Any]]:
    """Every (non-deleting) pod matching `selector` is bound to a node; with `some`, there is one at least."""

    def all_bound() -> list[dict[str, Any]] | None:
        found = pods(kubectl, namespace, selector)
        if not all(p["spec"].get("nodeName") for p in found) or (some and not found):
            return None
        return found or [{}]

    return [
        p
        for p in wait_for(
            all_bound, timeout=timeout, interval=0.5, what=f"pods {selector or '*'} in {namespace} bound"
        )
        if p
    ]


def resource_refusals(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    """kube-scheduler's FailedScheduling events for a resource ("Insufficient …", "Too many pods")."""
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "reason=FailedScheduling")
    return [e for e in events["items"] if any(r in e.get("message", "") for r in RESOURCE_REASON)]


def pending_for_resources(kubectl: Kubectl, namespace: str) -> dict[str, float]:
    """Pods of `namespace` the scheduler refused for a resource, and for how long (s) they waited until
    bound (or until now, if still waiting): from its FailedScheduling events and the PodScheduled time."""
    refused: dict[str, datetime] = {}
    for event in resource_refusals(kubectl, namespace):
        name = event["involvedObject"]["name"]
        first = _time(
            event.get("firstTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"]
        )
        refused[name] = min(first, refused.get(name, first))
    waits: dict[str, float] = {}
    now = time.time()
    everything = {p["metadata"]["name"]: p for p in kubectl.json("get", "pods", "-n", namespace)["items"]}
    for name, first in refused.items():
        pod = everything.get(name)
        scheduled = condition(pod, "PodScheduled") if pod else {}
        end = _time(scheduled["lastTransitionTime"]).timestamp() if scheduled.get("status") == "True" else now
        waits[name] = round(max(0.0, end - first.timestamp()), 1)
    return waits


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _amount(resource: str, text: str) -> float:
    """Quantity to a number, written here apart from the operator's parser (judge by another method)."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def overbooked(kubectl: Kubectl) -> list[str]:
    """Every node's allocatable against the requests of the pods on it, bound or pinned there and not
    finished, all namespaces: "node resource used>allocatable" for each resource over."""
    nodes = {
        n["metadata"]["name"]: n["status"].get("allocatable", {})
        for n in kubectl.json("get", "nodes")["items"]
    }
    used: dict[tuple[str, str], float] = defaultdict(float)
    for pod in kubectl.json("get", "pods", "-A")["items"]:
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        node = pod["spec"].get("nodeName") or _pinned(pod)
        if not node:
            continue
        used[(node, "pods")] += 1
        for container in pod["spec"]["containers"]:
            for resource, text in (container.get("resources", {}).get("requests") or {}).items():
                used[(node, resource)] += _amount(resource, str(text))
    over = []
    for (node, resource), amount in sorted(used.items()):
        allocatable = _amount(resource, str(nodes.get(node, {}).get(resource, "0")))
        if amount > allocatable + 1e-9:
            over.append(f"{node} {resource} {amount:g}>{allocatable:g}")
    return over


def _pinned(pod: Mapping[str, Any]) -> str | None:
    terms = (
        ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    for term in terms:
        for field in term.get("matchFields") or ():
            if field.get("key") == "metadata.name" and len(field.get("values") or ()) == 1:
                return str(field["values"][0])
    return None


def job_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kubectl.json("get", "llamajob", name, "-n", namespace).get("status", {})


def wait_decided(kubectl: Kubectl, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    """Until the job is Running, or Queued for capacity, or Failed: what the operator decided."""

    def decided() -> dict[str, Any] | None:
        st = job_status(kubectl, namespace, name)
        phase, reason = st.get("phase"), st.get("reason")
        if phase in ("Running", "Failed") or (phase == "Queued" and reason == "NoCapacity"):
            return st
        return None

    return wait_for(decided, timeout=timeout, interval=0.5, what=f"{name} to be decided")


def end_workers(kubectl: Kubectl, namespace: str, job: str, code: int = 0) -> None:
    for pod in pods(kubectl, namespace, f"llamaop.io/job={job}"):
        kubectl.run("annotate", "pod", pod["metadata"]["name"], "-n", namespace, f"{EXIT_CODE}={code}",
                    "--overwrite")  # fmt: skip


def delete_and_wait(kubectl: Kubectl, namespace: str, what: str, selector: str = "") -> None:
    args = ["-l", selector] if selector else ["--all"]
    kubectl.run("delete", what, "-n", namespace, *args, "--wait=true", "--timeout=90s", check=False)
    if what.startswith("llamajob"):
        wait_for(lambda: not pods(kubectl, namespace, "app.kubernetes.io/managed-by=llama-operator"),
                 timeout=90, what=f"workers of {namespace} gone")  # fmt: skip
