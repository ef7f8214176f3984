"""Which jobs a reconcile pass needs to look at: those whose inputs changed since the last pass.

A pass over every job costs in proportion to the queue: with 10,000 queued jobs the planner alone takes
seconds, while a pass usually follows one watch event. The tracker compares the new snapshot with the
last one (views are immutable and a watch replaces a view only on an event, so an unchanged object is
the same object) and scopes the pass to:

- jobs whose own view or worker pods changed, or that just stopped being busy;
- active jobs on a node that changed or went away (their attempt may have failed);
- jobs that wait for time rather than an event: placed ones (pending timeout) and those with pods not
  yet running;
- queued jobs that may fit now: those that wait for a pool whose free capacity may have grown (a node
  changed or appeared, a pod or a placement left a node, a cooldown ended), and all of them when a pool's
  spec changed or a pool came or went.

A queued job that did not fit before cannot fit now unless a pool it accepts gained room: the engine
gives each job, in order, the best option with room, so less room never places more. That makes a
scoped pass decide what a full pass would, except for what only time changes in a queued job (a deadline
coming closer, a rate-limited explanation): a full pass every `full_every` catches those up, and is the
safety net for anything this reasoning misses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from llama_operator.api import AcceleratorPool
from llama_operator.api.types import Phase
from llama_operator.lifecycle.status import ACTIVE_PHASES, active_probes, holds_nodes
from llama_operator.lifecycle.views import JobView, NodeView, PodView
from llama_operator.planning.decision import NOT_ACCEPTED

if TYPE_CHECKING:
    from llama_operator.lifecycle.snapshot import Snapshot


@dataclass(frozen=True)
class Scope:
    """What one pass reconciles. `keys` None: every job (a full pass)."""

    keys: frozenset[str] | None = None
    held: frozenset[str] | None = None
    """Active jobs (Placed, Running), as the tracker keeps them; None: the pass finds them itself."""
    gone: frozenset[str] = frozenset()
    """Jobs of the last pass that are no longer there."""
    planned: dict[str, frozenset[str]] = field(default_factory=dict)
    """Filled by the pass: for each job it planned, the pools it waits for if it stays queued (empty when
    it was placed or rejected)."""

    @property
    def full(self) -> bool:
        return self.keys is None


def waiting_pools(candidates: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Pools a queued job could still be placed on, from its decision's (pool, verdict) rows. A pool ruled
    out as not accepted changes only with the job's spec or the pool's, and both make the job dirty."""
    return frozenset(pool for pool, verdict in candidates if verdict not in NOT_ACCEPTED)


def _queued(job: JobView) -> bool:
    return job.spec is not None and not job.spec.suspend and job.status.phase in (None, Phase.QUEUED)


def bookings(job: JobView) -> list[tuple[str, list[str], int, int]]:
    """What the job holds: (pool, nodes, devices per node, attempt) of its placement while it is active,
    and of each of its probes while it runs (lifecycle/probing.py)."""
    status = job.status
    out = []
    if status.phase in ACTIVE_PHASES:
        out.append(
            (status.pool or "", list(status.node_names), status.devices_per_node or 0, status.attempts or 0)
        )
    out += [(p.pool, p.node_names, p.devices_per_node, p.attempt) for p in active_probes(status)]
    return out


def _promise(job: JobView | None) -> Mapping[str, int]:
    """Devices the job holds per node (what the inventory counts as promised)."""
    if job is None:
        return {}
    held: dict[str, int] = {}
    for _, names, devices, _ in bookings(job):
        for name in names:
            held[name] = held.get(name, 0) + devices
    return held


def _released(old: JobView | None, new: JobView | None) -> set[str]:
    """Nodes on which the job holds fewer devices than before."""
    before, after = _promise(old), _promise(new)
    return {name for name, devices in before.items() if after.get(name, 0) < devices}


def _same(old: Sequence[object], new: Sequence[object]) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))


def _selects(pool: AcceleratorPool, node: NodeView) -> bool:
    return all(node.labels.get(k) == v for k, v in pool.spec.node_selector.items())


# What the operator writes to a pool's status from its nodes and bookings: derived, never planned from.
DERIVED_POOL_STATUS = frozenset(
    {"ready_nodes", "nodes", "allocatable_devices", "allocated_devices", "free_devices", "accelerator",
     "price_per_node_hour", "conditions", "last_update", "learned_from"}
)  # fmt: skip


def _planning_status(pool: AcceleratorPool) -> dict[str, object]:
    """The parts of a pool's status the planner may read (cooldown, learned speeds...): all but the
    counters the operator derives from the nodes, which change with every placement."""
    return pool.status.model_dump(exclude=set(DERIVED_POOL_STATUS)) if pool.status else {}


def _waits_for_time(job: JobView, pods: Sequence[PodView]) -> bool:
    """Active jobs whose next step may come from the clock (pending timeout), not from an event."""
    if job.status.phase == Phase.PLACED or active_probes(job.status):
        return True  # a placed attempt's pending timeout, a probe's timeout
    if job.status.phase != Phase.RUNNING:
        return False
    current = [p for p in pods if p.attempt == (job.status.attempts or 0)]
    return len(current) < len(job.status.node_names) or any(p.phase == "Pending" for p in current)


@dataclass(frozen=True)
class _Seen:
    now: datetime
    jobs: Mapping[str, JobView]
    pods: Mapping[str, tuple[PodView, ...]]
    nodes: Mapping[str, NodeView]
    usage: Mapping[str, Mapping[str, int]]
    pools: Mapping[str, AcceleratorPool]
    busy: frozenset[str]


class ChangeTracker:
    """Remembers the last pass's inputs and what each queued job waits for; scopes the next pass."""

    def __init__(self, full_every: timedelta = timedelta(seconds=60)) -> None:
        self.full_every = full_every
        self.waiting: dict[str, frozenset[str]] = {}
        """Queued job -> the pools it could be placed on once they have room (from its last decision)."""
        self.active: set[str] = set()
        """Keys of the active jobs (Placed, Running) as of the last scope."""
        self.clocked: set[str] = set()
        """Active jobs whose next step may come from the clock alone (see `_waits_for_time`)."""
        self._seen: _Seen | None = None
        self._full_at: datetime | None = None

    def reset(self) -> None:
        """Forget everything: the next pass is a full one (e.g. after a pass failed half-way)."""
        self._seen = None

    def scope(self, snap: Snapshot) -> Scope:
        """The jobs the pass over `snap` must reconcile (all of them when a full pass is due)."""
        now, jobs, pods, nodes, usage, pools = (
            snap.now,
            snap.jobs,
            snap.pods,
            snap.nodes,
            snap.usage,
            snap.pools,
        )
        seen = self._seen
        if seen is None or self._full_at is None or now - self._full_at >= self.full_every:
            self.active = {key for key, job in jobs.items() if holds_nodes(job.status)}
            return Scope(gone=frozenset(seen.jobs.keys() - jobs.keys()) if seen else frozenset())
        keys: set[str] = set()
        freed: set[str] = set()  # nodes where free capacity may have grown
        changed: set[str] = set()  # nodes whose health an attempt depends on changed
        for name, view in nodes.items():
            old = seen.nodes.get(name)
            if old is not view and old != view:
                changed.add(name)
                freed.add(name)
        changed.update(seen.nodes.keys() - nodes.keys())
        for name in usage.keys() | seen.usage.keys():  # what every pod on the node requests
            new_use, old_use = usage.get(name, {}), seen.usage.get(name, {})
            if new_use is not old_use and any(new_use.get(k, 0) < v for k, v in old_use.items()):
                freed.add(name)
        for key in pods.keys() | seen.pods.keys():
            if not _same(seen.pods.get(key, ()), pods.get(key, ())):
                keys.add(key)  # what a worker gives back shows in the nodes' usage above
        seen_jobs, active, new = seen.jobs, self.active, 0
        for key, job in jobs.items():
            old_job = seen_jobs.get(key)
            if old_job is not job:
                keys.add(key)
                new += old_job is None
                freed |= _released(old_job, job)
                if holds_nodes(job.status):
                    active.add(key)
                else:
                    active.discard(key)
        gone = frozenset(seen_jobs.keys() - jobs.keys()) if len(seen_jobs) != len(jobs) - new else frozenset()
        for key in gone:
            freed |= _released(seen_jobs[key], None)
            active.discard(key)
        if changed:
            keys.update(key for key in active if changed.intersection(jobs[key].status.node_names))
        # Every job that was busy took part in no pass since its view last changed: it does now.
        keys |= (self.clocked | (seen.busy - snap.busy)) & jobs.keys()

        grown: set[str] = set()
        every_queued = pools.keys() != seen.pools.keys()
        for name, pool in pools.items():
            old_pool = seen.pools.get(name)
            if old_pool is not None and old_pool is not pool:
                if old_pool.spec != pool.spec:
                    every_queued = True
                elif _planning_status(old_pool) != _planning_status(pool):
                    grown.add(name)
            until = pool.status.cooldown_until if pool.status else None
            if until is not None and seen.now < until <= now:
                grown.add(name)
        for node_name in freed:
            node = nodes.get(node_name) or seen.nodes.get(node_name)
            if node is not None:
                grown.update(name for name, pool in pools.items() if _selects(pool, node))
        if every_queued:
            keys.update(key for key, job in jobs.items() if _queued(job))
        elif grown:
            keys.update(key for key, waits in self.waiting.items() if waits & grown and key in jobs)
        return Scope(frozenset(keys), held=frozenset(active), gone=gone)

    def record(self, snap: Snapshot, scope: Scope) -> None:
        """After the pass over `snap`: remember its inputs and what the jobs it planned now wait for."""
        jobs = snap.jobs
        for key, waits in scope.planned.items():
            if waits:
                self.waiting[key] = waits
            else:
                self.waiting.pop(key, None)
        # Whether a job waits for the clock changes only with its view or its pods: both put it in scope.
        for key in jobs if scope.keys is None else scope.keys & jobs.keys():
            if _waits_for_time(jobs[key], snap.pods.get(key, ())):
                self.clocked.add(key)
            else:
                self.clocked.discard(key)
        if scope.full:
            self._full_at = snap.now
            self.waiting = {k: v for k, v in self.waiting.items() if k in jobs and _queued(jobs[k])}
            self.clocked &= jobs.keys()
        self._seen = _Seen(
            now=snap.now,
            jobs=dict(jobs),
            pods={k: tuple(v) for k, v in snap.pods.items()},
            nodes=dict(snap.nodes),
            usage=dict(snap.usage),
            pools=dict(snap.pools),
            busy=snap.busy,
        )
