"""The reconcile loop: snapshot the indexes, run the pure lifecycle, carry out its actions.

Level-triggered: a pass compares the whole snapshot with the last one and reconciles the jobs whose
inputs changed (lifecycle/changes.py), and every `full_every` one pass looks at every job, so a missed or
reordered watch event cannot leave a job stuck. Watch events only make the next pass come sooner. The
loop remembers what it wrote until the watch shows it back (read-your-writes), so a lagging index never
makes it decide twice.

Pipelined: a pass only decides; each job's actions run in a task of their own, and a job whose task is
still running sits out later passes. So a burst of placements never holds back the Running of jobs
placed earlier. A status is remembered as written from the moment its task is started, so the devices
it promises count in the next pass even while the write is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from llama_operator.api import LearnedSpeed, LlamaJobStatus
from llama_operator.api.types import API_VERSION, LLAMAJOB_KIND
from llama_operator.controller import metrics
from llama_operator.controller.kube import Kube
from llama_operator.controller.podwatch import PodWatch
from llama_operator.lifecycle.actions import (
    CoolDownPool,
    CreateWorkers,
    DeleteWorkers,
    JobActions,
    PatchStatus,
    RecordEvent,
    RecordThroughput,
    ReportUnschedulable,
)
from llama_operator.lifecycle.changes import ChangeTracker
from llama_operator.lifecycle.snapshot import (
    Options,
    Planner,
    Snapshot,
    build_inventory,
    mark_seen,
    pool_statuses,
    reconcile_all,
)
from llama_operator.lifecycle.status import dump, holds_nodes
from llama_operator.lifecycle.views import JobView, NodeView, PodView
from llama_operator.planning import learning
from llama_operator.planning.engine import calibration_of

log = structlog.get_logger("llamaop")

DELETE_KINDS = ("Pod", "Service", "RoleBinding", "Role")
LEARNED_FROM = 64  # probe samples a pool remembers as learned (api: AcceleratorPoolStatus.learned_from)


@dataclass
class Written:
    """A status this process wrote (or is writing) and the watch has not shown back yet."""

    raw: dict[str, Any]
    _status: LlamaJobStatus | None = None
    behind: Any = None
    """The last view found not to show this write yet: the same view need not be dumped again."""
    shown: Any = None
    """That view with this status: the same object on every pass, so the pass sees no change in it."""

    def status(self) -> LlamaJobStatus:
        if self._status is None:  # parsed once, not on every pass
            self._status = LlamaJobStatus.model_validate(self.raw)
        return self._status


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes (nodes, jobs, pools); pods come from the loop's cluster-wide PodWatch."""

    nodes: Any
    jobs: Any
    pools: Any


class JobTally:
    """The llamaop_jobs and llamaop_accrued_cost_dollars gauges, kept by counting only the jobs that
    changed (a count over 10,000 jobs on every pass would cost more than the pass)."""

    PHASES = ("Queued", "Placed", "Running", "Succeeded", "Failed", "Suspended")

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, tuple[str, str], float]] = {}
        self.phases: dict[str, int] = {}
        self.costs: dict[tuple[str, str], float] = {}

    @staticmethod
    def row(job: JobView) -> tuple[str, tuple[str, str], float]:
        return (
            str(job.status.phase or "Queued"),
            (job.namespace, job.status.pool or ""),
            job.status.accrued_cost or 0.0,
        )

    def update(self, jobs: Mapping[str, JobView], keys: frozenset[str] | None, gone: frozenset[str]) -> None:
        """Recount `keys` and `gone` (all jobs when keys is None) and set the gauges."""
        if keys is None:
            self.rows, self.phases, self.costs = {}, {}, {}
        touched: set[tuple[str, str]] = set()
        for key in jobs if keys is None else keys | gone:
            job = jobs.get(key)
            new = None if job is None else self.row(job)
            for row, sign in ((self.rows.pop(key, None), -1), (new, 1)):
                if row is None:
                    continue
                phase, pool_key, cost = row
                self.phases[phase] = self.phases.get(phase, 0) + sign
                if cost:
                    self.costs[pool_key] = self.costs.get(pool_key, 0.0) + sign * cost
                    touched.add(pool_key)
            if new is not None:
                self.rows[key] = new
        for phase in self.PHASES:
            metrics.JOBS.labels(phase).set(self.phases.get(phase, 0))
        for namespace, pool in touched:
            metrics.ACCRUED_COST.labels(namespace, pool).set(max(0.0, self.costs[(namespace, pool)]))


def _values(index: Any) -> dict[Any, list[Any]]:
    """A kopf index as {key: [values]} (a Store per key)."""
    return {key: list(store) for key, store in index.items()}


class Loop:
    def __init__(self) -> None:
        self.indexes: Indexes | None = None
        self.kube: Kube | None = None
        self.options: Options | None = None
        self.planner: Planner | None = None
        self.interval = 2.0
        self.debounce = 0.3
        self.concurrency = 96
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.written: dict[str, Written] = {}
        self.created_at: dict[tuple[str, int], datetime] = {}
        self.seen_at: dict[tuple[str, int], datetime] = {}
        self.deleted_at: dict[tuple[str, str], datetime] = {}
        self.explained_at: dict[str, datetime] = {}
        self.cost_at: dict[str, datetime] = {}
        self.queued_since: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._pass_seconds = 0.0
        self.inflight: set[str] = set()
        """Jobs whose actions are being carried out; they sit out passes until done."""
        self._slots: asyncio.Semaphore | None = None
        self._quick: asyncio.Semaphore | None = None
        """Slots for plans that only write a status or an event (a job turning Running), so they never
        queue behind a burst of plans that create or delete workers."""
        self.changes = ChangeTracker(full_every=timedelta(seconds=60))
        """Scopes each pass to the jobs whose inputs changed; a full pass every minute as a safety net."""
        self.tally = JobTally()
        self.pool_written: dict[str, dict[str, Any]] = {}
        self.pools_at = 0.0
        self.pool_every = 10.0
        self._pools: Mapping[str, Any] = {}
        self.learned_written: dict[str, list[LearnedSpeed]] = {}
        self.learned_from_written: dict[str, list[str]] = {}
        self.passes = 0
        self.namespaces: list[str] = []
        """The namespaces whose LlamaJobs this operator manages (empty: all). Pods count from all."""
        self.podwatch = PodWatch(self.wake)
        self._podwatch_task: asyncio.Task[None] | None = None

    def configure(self, kube: Kube, options: Options, planner: Planner) -> None:
        self.kube, self.options, self.planner = kube, options, planner

    async def start(self) -> None:
        self.prepare()
        self._task = asyncio.create_task(self._run(), name="llamaop-reconcile")
        assert self.kube is not None, "configure() the loop before starting it"
        self._podwatch_task = asyncio.create_task(self.podwatch.run(self.kube), name="llamaop-pods")

    def prepare(self) -> None:
        """What passes need, without the loop that runs them (a benchmark or a test calls pass_once)."""
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._quick = asyncio.Semaphore(self.concurrency // 2)

    async def drain(self) -> None:
        """Wait until the actions of every pass so far are carried out."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def stop(self) -> None:
        for task in (self._task, self._podwatch_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.kube is not None:
            await self.kube.close()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def node_changed(self, view: NodeView) -> bool:
        """Whether a node event changes what the loop sees of the node (most are heartbeats). kopf runs an
        index handler before it stores the result, so the index still holds the node's previous view."""
        if self.indexes is None:
            return True
        return view not in self.indexes.nodes.get(view.name, ())

    @property
    def ready(self) -> bool:
        """kopf's indexes are filled and every pod of the cluster has been listed."""
        return self.indexes is not None and self.podwatch.synced

    def attach(self, indexes: Indexes) -> None:
        if self.indexes is None:
            self.indexes = indexes
            log.info("indexes ready; reconciling")
            self.wake()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            if not self.ready:
                continue
            # Let a burst of watch events land in one pass, and keep passes to half the loop's time.
            await asyncio.sleep(max(self.debounce, self._pass_seconds))
            try:
                t0 = time.perf_counter()
                await self.pass_once()
                self._pass_seconds = time.perf_counter() - t0
            except Exception:  # a bad pass must not stop the operator; the next one retries
                log.exception("reconcile pass failed")
                await asyncio.sleep(1)

    def snapshot(self, now: datetime) -> Snapshot:
        """The indexes as they are now, with this process's writes the watch has not shown back yet."""
        assert self.indexes is not None
        jobs: dict[str, JobView] = {key: next(iter(store)) for key, store in self.indexes.jobs.items()}
        for key in list(self.written):
            if key in jobs:
                jobs[key] = self._read_your_writes(key, jobs[key])
        for key in list(self.written):
            if key not in jobs:
                del self.written[key]
        pods: dict[str, list[PodView]]
        pods, usage = self.podwatch.snapshot()
        nodes = {k: v[0] for k, v in _values(self.indexes.nodes).items()}
        pools = {k: v[0] for k, v in _values(self.indexes.pools).items()}
        return Snapshot(
            now=now, jobs=jobs, pods=pods, nodes=nodes, pools=pools, usage=usage,
            created_at=self.created_at, seen_at=self.seen_at, explained_at=self.explained_at,
            cost_at=self.cost_at,
            busy=frozenset(self.inflight),
        )  # fmt: skip

    def _read_your_writes(self, key: str, view: JobView) -> JobView:
        written = self.written.get(key)
        if written is None:
            return view
        if written.behind is not view:  # a burst keeps hundreds of writes pending for several passes
            if dump(view.status) == written.raw:
                del self.written[key]
                return view
            written.behind, written.shown = view, replace(view, status=written.status())
        return written.shown  # type: ignore[no-any-return]

    async def pass_once(self) -> None:
        assert self.options and self.planner and self.kube
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        snap = self.snapshot(now)
        self._pools = snap.pools
        scope = self.changes.scope(snap)
        # A job's phase and its pods' state change only with its view or its pods: both are in scope.
        scoped = snap.jobs if scope.keys is None else {k: snap.jobs[k] for k in scope.keys if k in snap.jobs}
        mark_seen(scoped, snap.pods, self.seen_at, now)
        self.tally.update(snap.jobs, scope.keys, scope.gone)
        started = time.monotonic()
        for key, job in scoped.items():
            if job.status.phase in (None, "Queued"):
                self.queued_since.setdefault(key, started)
        try:
            plans = reconcile_all(snap, self.options, self.planner, scope)
        except Exception:
            self.changes.reset()  # the next pass is a full one
            raise
        self.changes.record(snap, scope)
        metrics.PLAN_DURATION.observe(time.perf_counter() - t0)
        self.passes += 1
        for plan in plans:
            if plan.actions and plan.key not in self.inflight:  # busy jobs have no plan; one task per job
                self._start(plan, now)
        if time.monotonic() - self.pools_at >= self.pool_every:
            self.pools_at = time.monotonic()
            await self._refresh_pools(snap)

    async def _refresh_pools(self, snap: Snapshot) -> None:
        """Keep each AcceleratorPool's status (ready nodes, free devices, price) current."""
        assert self.kube is not None and self.options is not None
        active = [j for j in snap.jobs.values() if holds_nodes(j.status)]
        inventory = build_inventory(snap, self.options.catalog, active)
        for name, status in pool_statuses(inventory, self.options.catalog, snap.now).items():
            if self.pool_written.get(name) != status:
                await self.kube.patch_pool_status(name, {**status, "lastUpdate": _iso(snap.now)})
                self.pool_written[name] = status

    def _start(self, plan: JobActions, now: datetime) -> None:
        """Carry out one job's actions in the background. The status they end in counts as written from
        now on: the next pass must see the devices this job is promised, or it would give them away."""
        final = plan.final_status()
        promised = Written(dict(final.status)) if final is not None else None
        if promised is not None:
            self.written[plan.key] = promised
        self.inflight.add(plan.key)
        task = asyncio.create_task(self._carry_out(plan, now, promised))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _carry_out(self, plan: JobActions, now: datetime, promised: Written | None) -> None:
        assert self._slots is not None and self._quick is not None
        done: list[Mapping[str, Any]] = []  # statuses the API server took, in order
        heavy = any(isinstance(a, (CreateWorkers, DeleteWorkers)) for a in plan.actions)
        try:
            async with self._slots if heavy else self._quick:
                gone = not await self._execute(plan, now, done)
            if gone and self.written.get(plan.key) is promised:
                self.written.pop(plan.key, None)
        except Exception:  # the next pass retries from the last status that was really written
            if self.written.get(plan.key) is promised:
                if done:
                    self.written[plan.key] = Written(dict(done[-1]))
                else:
                    self.written.pop(plan.key, None)
            log.exception("actions failed", job=plan.key)
        finally:
            self.inflight.discard(plan.key)
            self.wake()

    async def _execute(self, plan: JobActions, now: datetime, done: list[Mapping[str, Any]]) -> bool:
        """False when the job is gone (its children go with it, by owner references)."""
        assert self.kube is not None
        jlog = log.bind(job=plan.key)
        for action in plan.actions:
            if isinstance(action, PatchStatus):
                if not await self.kube.patch_job_status(action.namespace, action.name, action.status):
                    return False
                done.append(action.status)
                self._after_status(plan.key, action.status, now)
            elif isinstance(action, CreateWorkers):
                self.created_at[(plan.key, action.attempt)] = now
                created = await self._create(action.manifests)
                jlog.info(
                    "workers created", attempt=action.attempt, objects=len(action.manifests), new=created
                )
            elif isinstance(action, DeleteWorkers):
                mark = (plan.key, action.selector)
                last = self.deleted_at.get(mark)
                if last is not None and now - last < timedelta(seconds=15):
                    continue
                self.deleted_at[mark] = now
                for kind in DELETE_KINDS:
                    await self.kube.delete_collection(kind, action.namespace, action.selector)
                if action.whole_job:
                    await self.kube.delete_collection("ServiceAccount", action.namespace, action.selector)
            elif isinstance(action, RecordEvent):
                self._event(action, now)
            elif isinstance(action, RecordThroughput):
                await self._learn(action)
            elif isinstance(action, ReportUnschedulable):
                for resource in action.resources:
                    metrics.UNSCHEDULABLE.labels(action.pool, resource).inc()
                # A bug report: the inventory booked what the scheduler says is not there.
                jlog.warning("capacity mismatch", pool=action.pool, node=action.node,
                             resources=list(action.resources), scheduler=action.message)  # fmt: skip
            elif isinstance(action, CoolDownPool):
                metrics.FAILOVERS.labels(action.pool, action.reason).inc()
                await self.kube.patch_pool_status(action.pool, {"cooldownUntil": _iso(action.until)})
                jlog.warning("failover", pool=action.pool, reason=action.reason)
        return True

    async def _create(self, manifests: Sequence[Mapping[str, Any]]) -> int:
        """Create an attempt's objects in two concurrent waves, in dependency order: a RoleBinding needs its
        Role (the API server resolves it to check for privilege escalation) and pods need their
        ServiceAccount (admission checks it); the rest depends on nothing the operator creates."""
        assert self.kube is not None
        later = ("RoleBinding", "Pod")
        created = 0
        for wave in (
            [m for m in manifests if m["kind"] not in later],
            [m for m in manifests if m["kind"] in later],
        ):
            created += sum(await asyncio.gather(*(self.kube.create(m) for m in wave)))
        return created

    async def _learn(self, action: RecordThroughput) -> None:
        """Fold a finished job's measured speed into its pool's learnedSpeeds (planning/learning.py)."""
        assert self.kube is not None
        pool = self._pools.get(action.pool)
        if pool is None:
            return
        known = pool.status.learned_speeds if pool.status else []
        ids = list(pool.status.learned_from) if pool.status else []
        mine = self.learned_written.get(action.pool, [])
        if sum(e.runs for e in mine) > sum(e.runs for e in known):
            known = mine  # this process wrote a newer list than the watch has shown yet
            ids = self.learned_from_written.get(action.pool, ids)
        if action.sample_id and action.sample_id in ids:
            return  # a probe's sample is learned once (asked again after a restart)
        catalog = self.options.catalog
        learned = learning.record(
            known, action.sample, pool.spec, catalog, calibration_of(catalog), datetime.now(UTC)
        )
        if learned is None:
            return
        self.learned_written[action.pool] = learned
        patch: dict[str, Any] = {"learnedSpeeds": [e.model_dump(by_alias=True, mode="json") for e in learned]}
        if action.sample_id:
            ids = [*ids, action.sample_id][-LEARNED_FROM:]
            self.learned_from_written[action.pool] = ids
            patch["learnedFrom"] = ids  # in the same patch: learned and marked at once
        await self.kube.patch_pool_status(action.pool, patch)

    def _after_status(self, key: str, status: Mapping[str, Any], now: datetime) -> None:
        phase = status.get("phase")
        reason = status.get("reason", "")
        if phase == "Queued":
            self.explained_at[key] = now
        else:
            self.explained_at.pop(key, None)
        self.cost_at[key] = now
        if phase in ("Placed", "Failed") and key in self.queued_since:
            metrics.PLACEMENT_LATENCY.observe(time.monotonic() - self.queued_since.pop(key))
            metrics.DECISIONS.labels(status.get("pool", "") if phase == "Placed" else "", reason).inc()
        namespace, _, name = key.partition("/")
        log.info("status", namespace=namespace, job=name, phase=phase, reason=reason, pool=status.get("pool"))

    def _event(self, ev: RecordEvent, now: datetime) -> None:
        """Post a core/v1 Event in the background: decisions must not wait on their explanations."""
        assert self.kube is not None
        stamp = _iso(now)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ev.name}.", "namespace": ev.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION, "kind": LLAMAJOB_KIND, "name": ev.name,
                "namespace": ev.namespace, "uid": ev.uid,
            },
            "type": ev.type,
            "reason": ev.reason,
            "message": ev.message[:1000],
            "source": {"component": "llama-operator"},
            "reportingComponent": "llama-operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }  # fmt: skip
        task = asyncio.create_task(self._post(body))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        assert self.kube is not None
        try:
            await self.kube.create(body)
        except Exception as exc:  # an event that cannot be posted is logged, never fatal
            log.warning("event not posted", reason=body["reason"], error=str(exc))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


LOOP = Loop()
