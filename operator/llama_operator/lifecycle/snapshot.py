"""The whole-cluster reconcile: every job through the state machine, the queue through the planner."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from llama_operator.api import AcceleratorPool, LlamaJobStatus
from llama_operator.api.types import Phase
from llama_operator.catalog import Catalog
from llama_operator.lifecycle.actions import (
    CreateWorkers,
    JobActions,
    PatchStatus,
    RecordEvent,
    RecordThroughput,
)
from llama_operator.lifecycle.changes import Scope, bookings, waiting_pools
from llama_operator.lifecycle.probing import (
    PROBING_CONDITION,
    lessons,
    measurements,
    none_measured,
    priced,
    probe_records,
    track_probes,
    wants_probe,
)
from llama_operator.lifecycle.reconcile import JobContext, Settings, reconcile_job, refresh_cost
from llama_operator.lifecycle.status import (
    ACTIVE_PHASES,
    active_probes,
    dump,
    holds_nodes,
    set_condition,
    transition,
)
from llama_operator.lifecycle.views import JobView, NodeView, PodView
from llama_operator.lifecycle.workerplan import worker_plan
from llama_operator.planning import learning
from llama_operator.planning.decision import Decision
from llama_operator.planning.inventory import Inventory, JobRequest, NodeState, PoolState
from llama_operator.planning.pools import PoolError, PoolType, resolve_pool
from llama_operator.planning.resources import add, pod_requests
from llama_operator.workers import render_worker_objects

Planner = Callable[[Sequence[JobRequest], Inventory, datetime], Sequence[Decision]]


@dataclass(frozen=True)
class Snapshot:
    """What the controller knows right now (its read-your-writes view of the cluster)."""

    now: datetime
    jobs: Mapping[str, JobView]
    pods: Mapping[str, Sequence[PodView]]
    """Worker pods by job key."""
    nodes: Mapping[str, NodeView]
    pools: Mapping[str, AcceleratorPool]
    usage: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Node -> what the pods holding it request, whatever their namespace or owner (lifecycle.usage)."""
    created_at: Mapping[tuple[str, int], datetime] = field(default_factory=dict)
    """(job key, attempt) -> when this process created that attempt's workers."""
    seen_at: Mapping[tuple[str, int], datetime] = field(default_factory=dict)
    """(job key, attempt) -> when all that attempt's workers were first seen (see `mark_seen`)."""
    explained_at: Mapping[str, datetime] = field(default_factory=dict)
    """job key -> when its Queued reason was last written (to rate-limit queue explanations)."""
    cost_at: Mapping[str, datetime] = field(default_factory=dict)
    """job key -> when its accrued cost was last written."""
    busy: frozenset[str] = frozenset()
    """Jobs whose earlier actions are still being carried out: they keep what their status promises
    (its devices count) and get no new actions until done."""


@dataclass(frozen=True)
class Options:
    settings: Settings
    catalog: Catalog
    explain_every: timedelta = timedelta(seconds=30)
    # Each accrued-cost refresh is one PATCH of a running job: once a minute per job, but never more than
    # `cost_writes_per_second` in all (a large cluster refreshes each job less often) nor
    # `cost_writes_per_pass` at once (after a restart every job is due).
    cost_every: timedelta = timedelta(seconds=60)
    cost_writes_per_second: float = 5.0
    cost_writes_per_pass: int = 10
    ensure_every: timedelta = timedelta(seconds=30)

    def cost_interval(self, active_jobs: int) -> timedelta:
        return max(self.cost_every, timedelta(seconds=active_jobs / self.cost_writes_per_second))


def _matches(node: NodeView, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items())


def mark_seen(
    jobs: Mapping[str, JobView],
    pods: Mapping[str, Sequence[PodView]],
    seen_at: dict[tuple[str, int], datetime],
    now: datetime,
) -> None:
    """Record when each active attempt's workers were all seen; from then on a missing one is lost.
    Also after an operator restart: seeing them again is enough. Running probes are attempts too."""
    for key, job in jobs.items():
        for probe in active_probes(job.status):
            if (key, probe.attempt) not in seen_at:
                count = sum(1 for p in pods.get(key, ()) if p.attempt == probe.attempt)
                if count and count >= len(probe.node_names):
                    seen_at[(key, probe.attempt)] = now
        if job.status.phase not in ACTIVE_PHASES:
            continue
        attempt = job.status.attempts or 0
        if (key, attempt) in seen_at:
            continue
        current = [p for p in pods.get(key, ()) if p.attempt == attempt]
        if current and len(current) >= len(job.status.node_names):
            seen_at[(key, attempt)] = now


def promised_workers(
    snap: Snapshot, catalog: Catalog, active: Sequence[JobView]
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """What active attempts will take from their nodes through worker pods not seen yet: devices per node
    (on cpu pools every worker's slots: a slot is no resource a pod requests), and everything else the
    pods request. Seen workers already count in the snapshot's usage, with what they really request."""
    devices: dict[str, int] = defaultdict(int)
    other: dict[str, dict[str, int]] = defaultdict(dict)
    kinds: dict[str, PoolType | None] = {}
    for job, (pool_name, node_names, per_pod, attempt) in ((j, b) for j in active for b in bookings(j)):
        if not node_names or per_pod < 1:
            continue
        if pool_name not in kinds:
            pool = snap.pools.get(pool_name)
            try:
                kinds[pool_name] = resolve_pool(pool.spec, catalog) if pool is not None else None
            except PoolError:
                kinds[pool_name] = None
        kind = kinds[pool_name]
        slots_only = kind is not None and kind.resource_name is None
        seen = {p.rank for p in snap.pods.get(job.key, ()) if p.attempt == attempt}
        vector: dict[str, int] = {}
        if kind is not None:
            train = job.spec is not None and job.spec.mode == "train"
            vector = pod_requests(kind, per_pod, train and len(node_names) > 1).vector()
        for rank, node in enumerate(node_names):
            if slots_only:
                devices[node] += per_pod
            if rank in seen:
                continue
            if not slots_only:
                devices[node] += per_pod
            add(other[node], vector)
    return dict(devices), dict(other)


def build_inventory(snap: Snapshot, catalog: Catalog, active: Sequence[JobView]) -> Inventory:
    """Pools with what each node has left: its allocatable minus what every pod holding it requests (any
    namespace, any owner) minus what placed jobs' workers not seen yet will request (no double booking)."""
    states = []
    for name, pool in sorted(snap.pools.items()):
        try:
            kind = resolve_pool(pool.spec, catalog)
        except PoolError:
            continue  # the planner reports unusable pools itself; nothing can be placed there
        res = kind.resource_name
        nodes = []
        for node in sorted(snap.nodes.values(), key=lambda n: n.name):
            if not _matches(node, pool.spec.node_selector):
                continue
            usage = snap.usage.get(node.name, {})
            nodes.append(
                NodeState(
                    name=node.name,
                    pool=name,
                    ready=node.ready,
                    schedulable=node.schedulable and not node.interrupted,
                    allocatable_devices=node.allocatable.get(res, 0) if res else None,
                    used_devices=usage.get(res, 0) if res else 0,
                    allocatable=node.allocatable,
                    requested=usage,
                )
            )
        status = pool.status
        states.append(
            PoolState(
                name=name,
                spec=pool.spec,
                nodes=tuple(nodes),
                cooldown_until=status.cooldown_until if status else None,
                learned=learning.factors(status.learned_speeds) if status else {},
            )
        )
    devices, other = promised_workers(snap, catalog, active)
    return Inventory(tuple(states), devices, other)


def pool_statuses(inventory: Inventory, catalog: Catalog, now: datetime) -> dict[str, dict[str, object]]:
    """What each AcceleratorPool's status shows: nodes, devices allocatable / allocated / free, price."""
    out: dict[str, dict[str, object]] = {}
    for state in inventory.pools:
        try:
            kind = resolve_pool(state.spec, catalog)
        except PoolError:
            continue
        usable = [n for n in state.nodes if n.ready and n.schedulable]
        alloc = sum(
            kind.devices_per_node if n.allocatable_devices is None else n.allocatable_devices for n in usable
        )
        used = sum(n.used_devices + inventory.promised.get(n.name, 0) for n in usable)
        out[state.name] = {
            "nodes": len(state.nodes),
            "readyNodes": len(usable),
            "allocatableDevices": alloc,
            "allocatedDevices": min(used, alloc),
            "freeDevices": max(0, alloc - used),
            "accelerator": kind.accelerator,
            "pricePerNodeHour": kind.price_per_node_hour,
        }
    return out


def _unrenderable(job: JobView, message: str, snap: Snapshot) -> JobActions:
    """A job whose workers cannot be rendered: Failed (InvalidWorkerSpec) with the reason."""
    out = JobActions(job.key)
    failed = transition(job.status, Phase.FAILED, "InvalidWorkerSpec", message, snap.now, job.generation)
    out.actions += [
        PatchStatus(job.namespace, job.name, dump(failed)),
        RecordEvent(job.namespace, job.name, job.uid, "Warning", "InvalidWorkerSpec", message),
    ]
    return out


def _placed(job: JobView, decision: Decision, opts: Options, snap: Snapshot) -> JobActions:
    """Status first (the booking is durable before any pod exists), then the workers."""
    out = JobActions(job.key)
    assert job.spec is not None
    attempt = (job.status.attempts or 0) + 1
    previous = job.status.model_copy(update={"attempts": attempt})
    status = decision.to_status(now=snap.now, previous=previous)
    record = status.placements[-1].model_copy(
        update={"attempt": attempt, "price_per_hour": decision.price_per_hour}
    )
    status = status.model_copy(update={"placements": [*status.placements[:-1], record]})
    try:
        plan = worker_plan(
            name=job.name,
            namespace=job.namespace,
            uid=job.uid,
            spec=job.spec,
            decision=decision,
            pool=snap.pools[decision.pool or ""],
            attempt=attempt,
            default_images=opts.settings.default_images,
            image_pull_policy=opts.settings.image_pull_policy,
        )
        manifests = tuple(render_worker_objects(plan))
    except (ValueError, KeyError) as exc:
        return _unrenderable(job, f"cannot render workers: {exc}", snap)
    status = transition(status, Phase.PLACED, decision.reason, decision.message, snap.now, job.generation,
                        start_time=None)  # fmt: skip
    out.placed_attempt = attempt
    out.actions += [
        PatchStatus(job.namespace, job.name, dump(status)),
        RecordEvent(job.namespace, job.name, job.uid, "Normal", "Placed", decision.message),
        CreateWorkers(job.namespace, job.name, attempt, manifests),
    ]
    return out


def _probing(job: JobView, decision: Decision, opts: Options, snap: Snapshot) -> JobActions:
    """A probe decision: every probe booked in status.probes first (one attempt each), then its workers."""
    out = JobActions(job.key)
    assert job.spec is not None
    first = (job.status.attempts or 0) + 1
    records = probe_records(decision, first, snap.now)
    previous = job.status.model_copy(update={"attempts": first + len(records) - 1})
    # Probes stopped by a suspension stay (they were charged); this round's follow them.
    probes = [*job.status.probes, *records]
    status = decision.to_status(now=snap.now, previous=previous).model_copy(update={"probes": probes})
    creates = []
    try:
        for record, plan in zip(records, decision.probes, strict=True):
            creates.append(_probe_workers(job, plan.placement, record.attempt, snap, opts))
    except (ValueError, KeyError) as exc:
        return _unrenderable(job, f"cannot render probe workers: {exc}", snap)
    conds = set_condition(status.conditions, PROBING_CONDITION, True, "Probing", decision.message, snap.now,
                          job.generation)  # fmt: skip
    status = transition(status.model_copy(update={"conditions": conds}), Phase.QUEUED, decision.reason,
                        decision.message, snap.now, job.generation)  # fmt: skip
    out.actions += [
        PatchStatus(job.namespace, job.name, dump(status)),
        RecordEvent(job.namespace, job.name, job.uid, "Normal", "Probing", decision.message),
        *creates,
    ]
    return out


def _probe_workers(
    job: JobView, placement: Decision, attempt: int, snap: Snapshot, opts: Options
) -> CreateWorkers:
    """The workers of one probe attempt: the job's own pods on the probed nodes, probe settings applied."""
    assert job.spec is not None
    plan = worker_plan(
        name=job.name, namespace=job.namespace, uid=job.uid, spec=job.spec, decision=placement,
        pool=snap.pools[placement.pool or ""], attempt=attempt, default_images=opts.settings.default_images,
        image_pull_policy=opts.settings.image_pull_policy, probe=job.spec.placement.probe,
    )  # fmt: skip
    return CreateWorkers(job.namespace, job.name, attempt, tuple(render_worker_objects(plan)))


def _lessons(job: JobView, status: LlamaJobStatus, snap: Snapshot) -> list[RecordThroughput]:
    """The measured probes' samples their pools have not learned yet (lifecycle/probing.lessons)."""
    if job.spec is None or not any(p.phase == "Measured" for p in status.probes):
        return []
    learned = {p.pool: (snap.pools[p.pool].status.learned_from if p.pool in snap.pools and
                        snap.pools[p.pool].status else []) for p in status.probes}  # fmt: skip
    return lessons(job.uid, job.spec, status, learned)


def _track_probes(job: JobView, snap: Snapshot, opts: Options) -> tuple[JobActions, str]:
    """Follow a Queued job's probes (lifecycle/probing.py), re-creating the pods of a probe whose status
    was written by an earlier process that stopped before creating them."""
    pods = snap.pods.get(job.key, ())
    seen = {p.attempt: (job.key, p.attempt) in snap.seen_at for p in job.status.probes}
    created = {p.attempt: (job.key, p.attempt) in snap.created_at for p in job.status.probes}
    creates: dict[int, CreateWorkers] = {}
    for probe in active_probes(job.status):
        missing = sum(1 for p in pods if p.attempt == probe.attempt) < len(probe.node_names)
        pool = snap.pools.get(probe.pool)
        if not missing or created[probe.attempt] or pool is None:
            continue
        placement = _decision_from_status(
            job, pool, opts, node_names=probe.node_names, devices=probe.devices_per_node,
            activation_checkpointing=probe.activation_checkpointing,
        )  # fmt: skip
        if placement is not None:
            try:
                creates[probe.attempt] = _probe_workers(job, placement, probe.attempt, snap, opts)
            except (ValueError, KeyError):
                continue  # rendered once already when the probe was booked; the timeout ends it otherwise
    return track_probes(job, pods, snap.nodes, snap.now, seen, created, creates)


def _not_placed(job: JobView, decision: Decision, snap: Snapshot, opts: Options) -> JobActions:
    out = JobActions(job.key)
    status = decision.to_status(now=snap.now, previous=job.status)
    if decision.outcome == "rejected":
        status = transition(status, Phase.FAILED, decision.reason, decision.message, snap.now, job.generation,
                            completion_time=snap.now)  # fmt: skip
        out.actions += [
            PatchStatus(job.namespace, job.name, dump(status)),
            RecordEvent(job.namespace, job.name, job.uid, "Warning", decision.reason, decision.message),
        ]
        return out
    status = transition(status, Phase.QUEUED, decision.reason, decision.message, snap.now, job.generation)
    last = snap.explained_at.get(job.key)
    changed = (job.status.reason, job.status.message) != (status.reason, status.message)
    fresh_reason = job.status.reason != status.reason
    if fresh_reason or (changed and (last is None or snap.now - last >= opts.explain_every)):
        out.actions.append(PatchStatus(job.namespace, job.name, dump(status)))
        if fresh_reason:
            out.actions.append(
                RecordEvent(job.namespace, job.name, job.uid, "Normal", decision.reason, decision.message)
            )
    return out


def reconcile_all(
    snap: Snapshot, opts: Options, planner: Planner, scope: Scope | None = None
) -> list[JobActions]:
    """One pass over the cluster, or over the jobs in `scope` (see lifecycle/changes.py); the others only
    count for what they hold and have their accrued cost refreshed when due. Deterministic: the same
    snapshot and scope give the same actions."""
    scope = scope or Scope()
    results: list[JobActions] = []
    to_plan: list[tuple[JobView, JobActions, bool]] = []
    active: list[JobView] = []
    keys = sorted(snap.jobs if scope.keys is None else scope.keys & snap.jobs.keys())
    if scope.held is None:
        held = [j for j in snap.jobs.values() if holds_nodes(j.status)]
    else:
        held = [snap.jobs[k] for k in scope.held if k in snap.jobs]
    cost_every = opts.cost_interval(len(held))
    cost_writes = 0
    for key in keys:
        job = snap.jobs[key]
        if key in snap.busy:
            if holds_nodes(job.status):  # placed, running, or probing
                active.append(job)
            continue
        seen = snap.seen_at.get((key, job.status.attempts or 0))
        ctx = JobContext(job, snap.pods.get(key, ()), snap.nodes, snap.now, seen)
        actions, need = reconcile_job(ctx, opts.settings)
        probed = need == "probes"
        if probed:
            tracked, need = _track_probes(job, snap, opts)
            actions.actions += tracked.actions  # the probes' results first, then what they teach
            written = tracked.final_status()
            status = LlamaJobStatus.model_validate(written.status) if written else job.status
            actions.actions += _lessons(job, status, snap)
        latest = actions.final_status()
        phase = Phase(latest.status["phase"]) if latest and "phase" in latest.status else job.status.phase
        if need == "plan":
            # Plan from the status this pass just wrote (e.g. a new job's Queued), keeping its events.
            if latest is not None:
                job = replace(job, status=LlamaJobStatus.model_validate(latest.status))
            to_plan.append((job, actions, probed))
            continue
        if phase == Phase.QUEUED and latest is None and active_probes(job.status):
            active.append(job)  # probing: its probes hold their nodes
        elif phase == Phase.QUEUED and latest is not None:
            written = replace(job, status=LlamaJobStatus.model_validate(latest.status))
            if active_probes(written.status):
                active.append(written)
        if phase in ACTIVE_PHASES:
            active.append(job)
            if need == "ensure":
                _ensure(job, snap, opts, actions)
            if (
                not actions.actions
                and cost_writes < opts.cost_writes_per_pass
                and _due(snap.cost_at.get(key), snap.now, cost_every)
            ):
                actions = refresh_cost(job, snap.now)
                cost_writes += bool(actions.actions)
        if actions.actions:
            results.append(actions)
    if scope.keys is not None:  # the active jobs outside the scope: their devices, and cost refreshes
        for job in sorted((j for j in held if j.key not in scope.keys), key=lambda j: j.key):
            active.append(job)
            if (
                job.key not in snap.busy
                and cost_writes < opts.cost_writes_per_pass
                and _due(snap.cost_at.get(job.key), snap.now, cost_every)
            ):
                refreshed = refresh_cost(job, snap.now)
                cost_writes += bool(refreshed.actions)
                if refreshed.actions:
                    results.append(refreshed)
    if not to_plan:
        return results
    inventory = build_inventory(snap, opts.catalog, active)
    requests = [
        JobRequest(
            key=job.key,
            spec=job.spec,  # type: ignore[arg-type]
            created=job.created,
            probe=wants_probe(job.spec, job.status),  # type: ignore[arg-type]
            measured=measurements(job.spec, job.status) if job.status.probes else {},  # type: ignore[arg-type]
        )
        for job, _, _ in to_plan
    ]
    decisions = {d.key: d for d in planner(requests, inventory, snap.now)}
    for job, earlier, probed in to_plan:
        decision = decisions[job.key]
        if not probed and job.status.probes and not job.status.placements:
            earlier.actions += _lessons(job, job.status, snap)  # after a restart: what may not be learned yet
        scope.planned[job.key] = (
            waiting_pools((c.pool, c.verdict) for c in decision.candidates)
            if decision.outcome == "queued"
            else frozenset()
        )
        if job.status.probes and decision.outcome in ("placed", "queued"):
            probes = priced(job.status.probes, decision.candidates)
            job = replace(job, status=job.status.model_copy(update={"probes": probes}))
        if decision.outcome == "placed" and job.status.probes:
            how = (
                "by estimate (no probe measured a speed)" if none_measured(job.status) else "by measured cost"
            )
            decision = replace(decision, message=f"{how}: {decision.message}")
        if decision.outcome == "probe":
            done = _probing(job, decision, opts, snap)
            earlier.actions = [a for a in earlier.actions if not isinstance(a, PatchStatus)]
        elif decision.outcome == "placed":
            done = _placed(job, decision, opts, snap)
            # The placed status supersedes an earlier Queued write of the same pass, except the write of
            # the probes' results: it must be durable before their pods go and the pool learns.
            if not probed:
                earlier.actions = [a for a in earlier.actions if not isinstance(a, PatchStatus)]
        else:
            done = _not_placed(job, decision, snap, opts)
        earlier.actions += done.actions
        earlier.placed_attempt = done.placed_attempt
        if earlier.actions:
            results.append(earlier)
    return results


def _due(last: datetime | None, now: datetime, every: timedelta) -> bool:
    return last is None or now - last >= every


def _ensure(job: JobView, snap: Snapshot, opts: Options, actions: JobActions) -> None:
    """Re-create missing workers of a placed attempt (after an operator restart between status and pods)."""
    attempt = job.status.attempts or 0
    if (job.key, attempt) in snap.created_at:
        return  # this process made them; lost ones are handled as failures, not silently re-made
    pool = snap.pools.get(job.status.pool or "")
    if pool is None or job.spec is None or not job.status.node_names:
        return
    decision = _decision_from_status(job, pool, opts)
    if decision is None:
        return
    plan = worker_plan(
        name=job.name, namespace=job.namespace, uid=job.uid, spec=job.spec, decision=decision, pool=pool,
        attempt=attempt, default_images=opts.settings.default_images,
        image_pull_policy=opts.settings.image_pull_policy,
    )  # fmt: skip
    actions.actions.append(
        CreateWorkers(job.namespace, job.name, attempt, tuple(render_worker_objects(plan)))
    )


def _decision_from_status(
    job: JobView,
    pool: AcceleratorPool,
    opts: Options,
    *,
    node_names: Sequence[str] | None = None,
    devices: int | None = None,
    activation_checkpointing: bool | None = None,
) -> Decision | None:
    """Rebuild the placement's shape from the job's status and its pool (for re-creating workers); a
    probe's shape comes from its record (node_names, devices, activation_checkpointing)."""
    try:
        kind = resolve_pool(pool.spec, opts.catalog)
    except PoolError:
        return None
    status = job.status
    names = list(status.node_names if node_names is None else node_names)
    devices = (status.devices_per_node or 0) if devices is None else devices
    if devices < 1 or job.spec is None:
        return None
    spans = job.spec.mode == "train" and len(names) > 1
    return Decision(
        key=job.key,
        outcome="placed",
        reason=status.reason or "Placed",
        message=status.message or "",
        pool=pool.metadata.name if node_names is not None else status.pool,
        accelerator=kind.accelerator if node_names is not None else status.accelerator,
        family=kind.family,
        capacity_type=kind.capacity_type,
        instance_type=kind.instance_type,
        backend=kind.backend,
        resource_name=kind.resource_name,
        node_names=tuple(names),
        nodes=len(names),
        devices_per_node=devices,
        processes_per_node=kind.processes_per_pod(devices),
        activation_checkpointing=bool(
            status.activation_checkpointing if activation_checkpointing is None else activation_checkpointing
        ),
        requests=pod_requests(kind, devices, spans),
    )
