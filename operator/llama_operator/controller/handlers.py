"""kopf wiring: indexes that keep the snapshot current, and the start of the reconcile loop.

No per-object handler writes anything: kopf keeps no state on our objects (no finalizers, no
annotations); every decision is made by the loop in state.py from these indexes. Pods are not watched
through kopf: kopf scopes them to the operator's namespaces, and capacity needs every pod of the cluster
(controller/podwatch.py).
"""

from __future__ import annotations

from typing import Any

import kopf

from llama_operator.api import AcceleratorPool
from llama_operator.api.types import ACCELERATORPOOL_PLURAL, GROUP, LLAMAJOB_PLURAL
from llama_operator.controller import state
from llama_operator.lifecycle.views import job_view, node_view

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
    if state.LOOP.namespaces and not any(c in "".join(state.LOOP.namespaces) for c in "*?!,"):
        # Exact namespace names: nothing to discover, so kopf needs no namespace (or CRD) list/watch.
        settings.scanning.disabled = True
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
    llamaop_jobs: kopf.Index[str, Any],
    llamaop_pools: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """kopf calls handlers only once every index is filled: from then on the loop may trust them."""
    state.LOOP.attach(state.Indexes(llamaop_nodes, llamaop_jobs, llamaop_pools))
