"""kopf wiring: indexes that keep the snapshot current, and the start of the reconcile loop.

No per-object handler writes anything: kopf keeps no state on our objects (no finalizers, no
annotations); every decision is made by the loop in loop.py from these indexes.
"""

from __future__ import annotations

from typing import Any

import kopf

from llama_operator.api import AcceleratorPool
from llama_operator.api.types import ACCELERATORPOOL_PLURAL, GROUP, LLAMAJOB_PLURAL
from llama_operator.controller import state
from llama_operator.lifecycle.views import MANAGED_BY, MANAGER, job_view, node_view, pod_view

LLAMAJOBS = (GROUP, LLAMAJOB_PLURAL)
POOLS = (GROUP, ACCELERATORPOOL_PLURAL)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the body) on every watch event to detect changes for
    on.create/update handlers. We register none, so the copy is pure cost: a third of the operator's CPU in
    a burst of pod events. An empty essence keeps kopf's cause detection cheap and correct."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    # Our own events carry the decisions; kopf's per-handler events would be noise at thousands of jobs.
    settings.posting.level = 100
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf keeps one worker task per object; limiting them throttles a burst of thousands of objects to
    # limit/idle_timeout per second, so leave them unlimited and let idle ones end quickly.
    settings.batching.idle_timeout = 1.0
    await state.LOOP.start()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    await state.LOOP.stop()


@kopf.index("nodes")
async def llamaop_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    view = node_view(body)
    # Heartbeats change nothing the operator reads; with hundreds of nodes they would keep it replanning.
    if state.LOOP.node_changed(view):
        state.LOOP.wake()
    return {name: view}


@kopf.index("pods", labels={MANAGED_BY: MANAGER})
async def llamaop_workers(body: kopf.Body, **_: Any) -> dict[str, Any]:
    view = pod_view(body)
    state.LOOP.wake()
    return {view.key: view} if view.key else {}


def _foreign_bound(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels, **_: Any
) -> bool:
    return (
        labels.get(MANAGED_BY) != MANAGER
        and bool(spec.get("nodeName"))
        and status.get("phase") not in ("Succeeded", "Failed")
    )


@kopf.index("pods", when=_foreign_bound)
async def llamaop_foreign_usage(body: kopf.Body, **_: Any) -> dict[str, Any]:
    view = pod_view(body)
    return {view.node_name: view} if view.requests else {}


@kopf.index(*LLAMAJOBS)
async def llamaop_jobs(body: kopf.Body, **_: Any) -> dict[str, Any]:
    view = job_view(body)
    state.LOOP.wake()
    return {view.key: view}


@kopf.index(*POOLS)
async def llamaop_pools(name: str, body: kopf.Body, logger: kopf.Logger, **_: Any) -> dict[str, Any]:
    state.LOOP.wake()
    try:
        return {name: AcceleratorPool.model_validate(dict(body))}
    except ValueError as exc:
        logger.warning(f"AcceleratorPool {name} is invalid and ignored: {exc}")
        return {}


# On pools only: an event handler makes kopf diff every body it sees, which at thousands of jobs costs more
# than the rest of the operator; with no pool there is nothing to place anyway.
@kopf.on.event(*POOLS)
async def indexed(
    llamaop_nodes: kopf.Index[str, Any],
    llamaop_workers: kopf.Index[str, Any],
    llamaop_foreign_usage: kopf.Index[str, Any],
    llamaop_jobs: kopf.Index[str, Any],
    llamaop_pools: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """kopf calls handlers only once every index is filled: from then on the loop may trust them."""
    state.LOOP.attach(
        state.Indexes(llamaop_nodes, llamaop_workers, llamaop_foreign_usage, llamaop_jobs, llamaop_pools)
    )
