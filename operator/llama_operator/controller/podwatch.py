"""Every pod of the cluster, listed then watched, whatever namespaces the operator manages jobs in.

kube-scheduler counts every pod bound or nominated to a node; a planner that counts fewer promises
what is not there. kopf scopes namespaced watches to the operator's namespaces, so pods are watched here
instead, cluster-wide, with nothing but list and watch (the chart's ClusterRole grants just that). One
stream feeds two indexes: the operator's own workers by job (what the lifecycle follows) and what the
pods on each node request (lifecycle.usage, what the planner books against).

The protocol is the API server's list-then-watch (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):
a paginated list gives a resourceVersion; the watch resumes from the last one seen (bookmarks keep it
fresh); "410 Gone" means it is too old, so the state is listed anew and swapped in whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from llama_operator.controller import metrics
from llama_operator.controller.kube import ApiError, Kube
from llama_operator.lifecycle.usage import NodeUsage
from llama_operator.lifecycle.views import PodView, pod_view

log = structlog.get_logger("llamaop")

PODS_PATH = "/api/v1/pods"
PAGE = 500
WATCH_SECONDS = 290  # the API server ends the watch; the client gives it a margin beyond that


class Expired(Exception):
    """The resourceVersion is gone from the API server's window: list again."""


class PodWatch:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.workers: dict[str, dict[str, PodView]] = {}
        """Job key -> pod name -> the operator's worker pods (any phase)."""
        self.usage = NodeUsage()
        self._jobs: dict[str, tuple[str, str]] = {}
        """Pod uid -> (job key, pod name), to drop a worker whose deletion carries no labels we need."""
        self.synced = False
        """True once the first list is in: before that the inventory would miss pods."""
        self.resource_version = ""

    def snapshot(self) -> tuple[dict[str, list[PodView]], dict[str, Mapping[str, int]]]:
        """Workers by job and usage by node, copied: later events do not change what a pass sees."""
        return {k: list(v.values()) for k, v in self.workers.items()}, dict(self.usage.by_node)

    async def run(self, kube: Kube) -> None:
        backoff = 1.0
        while True:
            try:
                if not self.resource_version:
                    await self.relist(kube)
                await self.watch(kube)
                backoff = 1.0
            except Expired:
                log.info("pod watch expired; listing again")
                self.resource_version = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server restarted, a connection broke: resume after a pause
                log.warning("pod watch failed; retrying", error=str(exc), backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def relist(self, kube: Kube) -> None:
        workers: dict[str, dict[str, PodView]] = {}
        jobs: dict[str, tuple[str, str]] = {}
        usage = NodeUsage()
        params: dict[str, str] = {"limit": str(PAGE)}
        while True:
            try:
                page = await kube.get_json(PODS_PATH, params)
            except ApiError as exc:
                if exc.status == 410:  # the continue token expired mid-list: start the list over
                    params = {"limit": str(PAGE)}
                    workers, jobs, usage = {}, {}, NodeUsage()
                    continue
                raise
            for body in page.get("items") or ():
                view = pod_view(body)
                uid = body["metadata"].get("uid", "")
                usage.update(uid, view)
                if view.key:
                    workers.setdefault(view.key, {})[view.name] = view
                    jobs[uid] = (view.key, view.name)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params = {"limit": str(PAGE), "continue": meta["continue"]}
        self.workers, self._jobs, self.usage = workers, jobs, usage
        self.resource_version = str(meta.get("resourceVersion") or "")
        metrics.POD_WATCH_RELISTS.inc()
        metrics.PODS_COUNTED.set(len(usage))
        if not self.synced:
            log.info("pods listed", pods=len(usage), workers=sum(len(v) for v in workers.values()))
        self.synced = True
        self.on_change()

    async def watch(self, kube: Kube) -> None:
        params = {
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async for line in kube.watch(PODS_PATH, params, read_timeout=WATCH_SECONDS + 40):
            metrics.POD_WATCH_BYTES.inc(len(line))
            event = json.loads(line)
            kind, body = event.get("type"), event.get("object") or {}
            metrics.POD_WATCH_EVENTS.labels(kind or "").inc()
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Expired()
                raise ApiError(int(body.get("code") or 500), "WATCH", PODS_PATH, str(body.get("message")))
            version = (body.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED", "DELETED") and self.apply(kind, body):
                self.on_change()
            if version:
                self.resource_version = str(version)

    def apply(self, kind: str, body: Mapping[str, Any]) -> bool:
        """One watch event; True when the loop should look again: a worker changed, or some pod gave node
        resources back. Another pod taking more needs no pass (nothing new fits); the next one counts it."""
        uid = body["metadata"].get("uid", "")
        view = None if kind == "DELETED" else pod_view(body)
        changed = self.usage.update(uid, view) == "freed"
        before = self._jobs.get(uid)
        if view is not None and view.key:
            self.workers.setdefault(view.key, {})[view.name] = view
            self._jobs[uid] = (view.key, view.name)
            changed = True
        elif before is not None:
            key, name = self._jobs.pop(uid)
            pods = self.workers.get(key, {})
            pods.pop(name, None)
            if not pods:
                self.workers.pop(key, None)
            changed = True
        metrics.PODS_COUNTED.set(len(self.usage))
        return changed
