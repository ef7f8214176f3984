"""Builders of raw Kubernetes bodies for the lifecycle tests (what the watches would deliver)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from llama_operator.api import AcceleratorPool
from llama_operator.catalog import builtin
from llama_operator.lifecycle.actions import (
    CoolDownPool,
    CreateWorkers,
    DeleteWorkers,
    JobActions,
    PatchStatus,
)
from llama_operator.lifecycle.reconcile import Settings
from llama_operator.lifecycle.snapshot import Options, Snapshot, mark_seen, reconcile_all
from llama_operator.lifecycle.usage import NodeUsage
from llama_operator.lifecycle.views import JobView, NodeView, PodView, job_view, node_view, pod_view
from llama_operator.planning import plan

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OPTIONS = Options(settings=Settings(), catalog=builtin())

# Allocatable as the instance catalog has it (cpu, memory), plus the device plugins' resources.
POOLS = {
    "trn1": ("trn1.32xlarge", {"cpu": "128", "memory": "512Gi", "aws.amazon.com/neuron": "16"}, "on-demand"),
    "p5": ("p5.48xlarge", {"cpu": "192", "memory": "2Ti", "nvidia.com/gpu": "8"}, "on-demand"),
    "cpu": ("m7i.8xlarge", {"cpu": "32", "memory": "128Gi"}, "on-demand"),
}


def pool(name: str) -> AcceleratorPool:
    instance, _, capacity = POOLS[name]
    return AcceleratorPool.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"llamaop.io/pool": name},
                "instanceType": instance,
                "capacityType": capacity,
            },
        }
    )


def node(pool_name: str, index: int, *, ready: bool = True, taints: Sequence[str] = ()) -> NodeView:
    _, allocatable, _ = POOLS[pool_name]
    return node_view(
        {
            "metadata": {"name": f"{pool_name}-{index}", "labels": {"llamaop.io/pool": pool_name}},
            "spec": {"taints": [{"key": t, "effect": "NoSchedule"} for t in taints]},
            "status": {
                "allocatable": {"pods": "110", **allocatable},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def job(
    name: str, spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1
) -> JobView:
    return job_view(
        {
            "metadata": {
                "name": name,
                "namespace": "ml",
                "uid": f"uid-{name}",
                "generation": generation,
                "creationTimestamp": "2026-11-28T11:00:00Z",
            },
            "spec": spec,
            "status": status or {},
        }
    )


def train_spec(**placement: Any) -> dict[str, Any]:
    return {
        "mode": "train",
        "model": {"preset": "tiny"},
        "training": {"steps": 200, "sequenceLength": 256, "batchSize": 64},
        "placement": {"backoffLimit": 2, "pendingTimeout": "2m", **placement},
    }


class World:
    """A mutable little cluster: apply the lifecycle's actions to it and run passes."""

    def __init__(self, nodes: Sequence[NodeView], pools: Sequence[str]) -> None:
        self.now = T0
        self.nodes = {n.name: n for n in nodes}
        self.pools = {p: pool(p) for p in pools}
        self.jobs: dict[str, JobView] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.created_at: dict[tuple[str, int], datetime] = {}
        self.seen_at: dict[tuple[str, int], datetime] = {}
        self.cost_at: dict[str, datetime] = {}
        self.deleted: list[str] = []
        self.cooled: list[str] = []
        self.options = OPTIONS

    def add(self, view: JobView) -> None:
        self.jobs[view.key] = view

    def snapshot(self, busy: frozenset[str] = frozenset()) -> Snapshot:
        pods: dict[str, list[PodView]] = {}
        views = [pod_view(body) for body in self.pods.values()]
        for view in views:
            if view.key:
                pods.setdefault(view.key, []).append(view)
        mark_seen(self.jobs, pods, self.seen_at, self.now)
        return Snapshot(
            now=self.now, jobs=self.jobs, pods=pods, nodes=self.nodes, pools=self.pools,
            usage=NodeUsage.of(views).by_node, created_at=self.created_at, seen_at=self.seen_at,
            cost_at=self.cost_at, busy=busy,
        )  # fmt: skip

    def step(
        self, advance: timedelta = timedelta(seconds=5), busy: frozenset[str] = frozenset()
    ) -> list[JobActions]:
        self.now += advance
        results = reconcile_all(
            self.snapshot(busy), self.options, lambda j, i, n: plan(j, i, now=n, catalog=OPTIONS.catalog)
        )
        for result in results:
            for action in result.actions:
                self._apply(result.key, action)
        return results

    def _apply(self, key: str, action: Any) -> None:
        if isinstance(action, PatchStatus):
            self.cost_at[key] = self.now
            view = self.jobs[key]
            raw = {"metadata": {"name": view.name, "namespace": view.namespace, "uid": view.uid,
                                "generation": view.generation, "creationTimestamp": "2026-11-28T11:00:00Z"},
                   "spec": dict(view.raw_spec), "status": copy.deepcopy(dict(action.status))}  # fmt: skip
            self.jobs[key] = job_view(raw)
        elif isinstance(action, CreateWorkers):
            self.created_at[(key, action.attempt)] = self.now
            for manifest in action.manifests:
                if manifest["kind"] == "Pod":
                    body = copy.deepcopy(dict(manifest))
                    body["status"] = {"phase": "Pending"}
                    self.pods[body["metadata"]["name"]] = body
        elif isinstance(action, DeleteWorkers):
            self.deleted.append(action.selector)
            for name, body in list(self.pods.items()):
                if selects(action.selector, body["metadata"]["labels"]):
                    del self.pods[name]
        elif isinstance(action, CoolDownPool):
            self.cooled.append(action.pool)
            status = self.pools[action.pool].status
            update = {"cooldown_until": action.until}
            self.pools[action.pool] = self.pools[action.pool].model_copy(
                update={"status": status.model_copy(update=update) if status else _pool_status(action.until)}
            )

    def pods_of(self, job_name: str) -> list[dict[str, Any]]:
        return [b for b in self.pods.values() if b["metadata"]["ownerReferences"][0]["name"] == job_name]

    def set_pods(self, job_name: str, phase: str, **status: Any) -> None:
        for body in self.pods_of(job_name):
            body["spec"]["nodeName"] = body["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
            body["status"] = {"phase": phase, **status}


def selects(selector: str, labels: dict[str, str]) -> bool:
    """A label selector of the forms the operator writes: k=v, k!=v and k (exists)."""
    for term in selector.split(","):
        if "!=" in term:
            key, value = term.split("!=")
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=")
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _pool_status(until: datetime) -> Any:
    from llama_operator.api import AcceleratorPoolStatus

    return AcceleratorPoolStatus(cooldown_until=until)
