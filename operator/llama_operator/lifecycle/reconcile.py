"""The job state machine: for each LlamaJob, compare what is with what should be and say what to do.

Phases: (new) -> Queued -> Placed -> Running -> Succeeded | Failed, and Suspended on request.
A Queued job goes to the planner (see placement.py); everything else is decided here from the job's
status, its pods of the current attempt and the health of the nodes they sit on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from llama_operator.api import LlamaJobSpec, LlamaJobStatus, duration_seconds
from llama_operator.api.types import Phase
from llama_operator.lifecycle.actions import (
    CoolDownPool,
    DeleteWorkers,
    JobActions,
    PatchStatus,
    RecordEvent,
    RecordThroughput,
    ReportUnschedulable,
)
from llama_operator.lifecycle.probing import stop_probes
from llama_operator.lifecycle.status import (
    TERMINAL_PHASES,
    active_probes,
    close_placement,
    dump,
    job_cost,
    progress_from_annotation,
    retries_used,
    set_condition,
    transition,
)
from llama_operator.lifecycle.views import JobView, NodeView, PodView
from llama_operator.planning.learning import Sample
from llama_operator.planning.llama import shape_of
from llama_operator.planning.speed import Arch
from llama_operator.workers import attempt_selector, job_selector, other_attempts_selector, selector_string


@dataclass(frozen=True)
class Settings:
    """Operator-wide knobs of the lifecycle (command-line flags of `llamaop run`)."""

    pool_cooldown: timedelta = timedelta(minutes=10)
    # Pods this process created and that then vanish count as lost only after the watch had time to see them.
    lost_worker_grace: timedelta = timedelta(seconds=20)
    # A worker the scheduler finds short of a resource gets this long to bind (the scheduler retries when a
    # pod leaves the node; its cache may trail the operator's by a moment) before the job is re-placed.
    unschedulable_grace: timedelta = timedelta(seconds=10)
    default_images: Mapping[str, str] = field(
        default_factory=lambda: {
            "cpu": "localhost/llama-worker-cpu:dev",
            "cuda": "public.ecr.aws/llamaop/llama-worker-cuda:0.1.0",
            "neuron": "public.ecr.aws/llamaop/llama-worker-neuron:0.1.0",
        }
    )
    image_pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class JobContext:
    """Everything reconcile_job needs about one job."""

    job: JobView
    pods: Sequence[PodView]
    nodes: Mapping[str, NodeView]
    now: datetime
    seen_at: datetime | None = None
    """When every worker of the current attempt was first seen (None: not yet, by this process)."""


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    failover: bool
    """True moves the job off its pool (cooling the pool down); False retries wherever the planner says."""
    counts: bool = True
    """Whether it uses up one of backoffLimit's retries."""
    refused: PodView | None = None
    """The worker the scheduler refused for a resource the operator had booked (a bug report)."""


def _event(job: JobView, warning: bool, reason: str, message: str) -> RecordEvent:
    kind = "Warning" if warning else "Normal"
    return RecordEvent(job.namespace, job.name, job.uid, kind, reason, message)


def _patch(job: JobView, status: LlamaJobStatus) -> PatchStatus:
    return PatchStatus(job.namespace, job.name, dump(status))


def _delete_all(job: JobView) -> DeleteWorkers:
    return DeleteWorkers(job.namespace, job.name, selector_string(job_selector(job.name)), whole_job=True)


def _current_attempt(status: LlamaJobStatus) -> int:
    return status.attempts or 0


def find_failure(
    ctx: JobContext,
    current: Sequence[PodView],
    expected: int,
    unschedulable_grace: timedelta = Settings.unschedulable_grace,
) -> Failure | None:
    """The first reason the current attempt cannot go on, if any; failover reasons come first."""
    job, status = ctx.job, ctx.job.status
    for node_name in status.node_names:
        node = ctx.nodes.get(node_name)
        if node is None:
            return Failure("NodeLost", f"node {node_name} is gone", failover=True)
        if node.interrupted:
            return Failure("SpotInterruption", f"node {node_name} is being reclaimed", failover=True)
        if not node.ready:
            return Failure("NodeNotReady", f"node {node_name} is NotReady", failover=True)
    for pod in current:
        if pod.disruption:
            return Failure("Evicted", f"pod {pod.name}: {pod.disruption}", failover=True)
    if ctx.seen_at is not None and len(current) < expected:
        # Only pods once seen can be lost: a lagging watch must not make new pods look gone.
        # A deleted pod says nothing about its pool (people and controllers delete pods): retry, no cooldown.
        return Failure("WorkerLost", f"{expected - len(current)} worker pod(s) disappeared", failover=False)
    for pod in current:
        if pod.phase == "Failed":
            why = pod.exit_reason or "Error"
            return Failure("WorkerFailed", f"pod {pod.name} exited {pod.exit_code} ({why})", failover=False)
    for pod in current:
        # Every resource a worker requests was booked on its node: a scheduler that finds one short saw a
        # pod the inventory did not (or saw it first). Not the pool's fault: re-place at once, no cooldown.
        since = pod.unschedulable_since
        if pod.short_of and not pod.deleting and since is not None and ctx.now - since >= unschedulable_grace:
            where = pod.pinned_node or "its node"
            message = f"the scheduler refused pod {pod.name} on {where}: {pod.unschedulable_message}"
            return Failure("Unschedulable", message, failover=False, refused=pod)
    placed_at = status.placements[-1].time if status.placements else None
    pending = [p for p in current if p.phase == "Pending" and not p.deleting]
    missing = expected - len(current) if ctx.seen_at is None else 0
    assert job.spec is not None
    timeout = duration_seconds(job.spec.placement.pending_timeout)
    if (pending or missing) and placed_at is not None and (ctx.now - placed_at).total_seconds() > timeout:
        if missing:
            why, count = "never appeared", missing
        else:
            why = "unschedulable" if any(p.unschedulable for p in pending) else "not started"
            count = len(pending)
        return Failure(
            "PendingTimeout",
            f"{count} worker pod(s) {why} for over {job.spec.placement.pending_timeout}",
            failover=True,
        )
    return None


def fail_attempt(ctx: JobContext, failure: Failure, settings: Settings) -> JobActions:
    """End the current attempt: retry or fail over within backoffLimit, else Failed."""
    job, status, now = ctx.job, ctx.job.status, ctx.now
    assert job.spec is not None
    out = JobActions(job.key)
    attempt = _current_attempt(status)
    placements = close_placement(status.placements, now, failure.reason)
    out.actions.append(
        DeleteWorkers(job.namespace, job.name, selector_string(attempt_selector(job.name, attempt)))
    )
    used = retries_used(placements)
    if failure.refused is not None:
        pod = failure.refused
        out.actions.append(
            ReportUnschedulable(job.namespace, job.name, status.pool or "", pod.pinned_node or "",
                                pod.short_of, pod.unschedulable_message)
        )  # fmt: skip
        # Kept after the job is placed again: the record of what the inventory missed.
        conditions = set_condition(status.conditions, "CapacityMismatch", True, "Unschedulable",
                                   f"attempt {attempt}: {failure.message}", now, job.generation)  # fmt: skip
        status = status.model_copy(update={"conditions": conditions})
    if failure.counts and used > job.spec.placement.backoff_limit:
        message = f"{failure.message}; backoffLimit {job.spec.placement.backoff_limit} reached"
        new = transition(status, Phase.FAILED, "BackoffLimitExceeded", message, now, job.generation,
                         placements=placements, completion_time=now)  # fmt: skip
        out.actions += [_patch(job, new), _event(job, True, "BackoffLimitExceeded", message)]
        return out
    if failure.failover and status.pool:
        out.actions.append(CoolDownPool(status.pool, now + settings.pool_cooldown, failure.reason))
        out.failover_from, out.failover_reason = status.pool, failure.reason
    verb = "failing over" if failure.failover else "retrying"
    if failure.counts:
        message = f"{failure.message}; {verb} (retry {used} of {job.spec.placement.backoff_limit})"
    else:
        message = f"{failure.message}; re-placing"
    new = transition(status, Phase.QUEUED, failure.reason, message, now, job.generation,
                     placements=placements, node_names=[])  # fmt: skip
    out.actions += [_patch(job, new), _event(job, True, failure.reason, message)]
    return out


def track_attempt(ctx: JobContext, settings: Settings) -> tuple[JobActions, bool]:
    """A Placed or Running job: follow its pods. Returns the actions and whether workers must be ensured."""
    job, status, now = ctx.job, ctx.job.status, ctx.now
    assert job.spec is not None
    attempt = _current_attempt(status)
    current = [p for p in ctx.pods if p.attempt == attempt and not p.deleting]
    stale = [p for p in ctx.pods if p.attempt != attempt and not p.deleting]
    out = JobActions(job.key)
    if stale:
        selector = other_attempts_selector(job.name, attempt)
        out.actions.append(DeleteWorkers(job.namespace, job.name, selector))
    expected = len(status.node_names)
    failure = find_failure(ctx, current, expected, settings.unschedulable_grace)
    if failure is None and job.generation != status.observed_generation:
        if job.spec.mode == "inference":
            # Serving specs (replicas, batch, model) apply by placing the job anew.
            failure = Failure("SpecChanged", "the spec changed", failover=False, counts=False)
        elif not any(c.type == "SpecChangeRefused" and c.observed_generation == job.generation
                     for c in status.conditions):  # fmt: skip
            message = (
                f"generation {job.generation} is not applied to the running training attempt; it applies at "
                "the next placement (suspend and resume the job to apply it now)"
            )
            conds = set_condition(status.conditions, "SpecChangeRefused", True, "TrainingInProgress",
                                  message, now, job.generation)  # fmt: skip
            status = status.model_copy(update={"conditions": conds})
            out.actions += [_patch(job, status), _event(job, True, "SpecChangeRefused", message)]
    if failure is not None:
        failed = fail_attempt(ctx, failure, settings)
        failed.actions[:0] = out.actions
        return failed, False

    new = status
    training = job.spec.mode == "train"
    if training and expected and len(current) == expected and all(p.phase == "Succeeded" for p in current):
        placements = close_placement(status.placements, now, "Succeeded")
        new = transition(status, Phase.SUCCEEDED, "Completed", "all workers exited 0", now, job.generation,
                         observe=False, placements=placements, completion_time=now)  # fmt: skip
        out.actions += [_patch(job, new), _event(job, False, "Completed", "training finished")]
        learned = _throughput(job.spec, status)
        if learned is not None:
            out.actions.append(learned)
        return out, False

    running = len(current) == expected and all(p.phase in ("Running", "Succeeded") for p in current)
    if not training:
        running = any(p.ready for p in current)  # serving counts as up once a replica answers
    rank0 = next((p for p in current if p.rank == 0 and p.progress), None)
    progress = progress_from_annotation(rank0.progress) if rank0 and rank0.progress else status.progress
    if running and status.phase != Phase.RUNNING:
        message = f"{len(current)} worker pod(s) running on {status.pool}"
        new = transition(status, Phase.RUNNING, "WorkersRunning", message, now, job.generation, observe=False,
                         start_time=status.start_time or now, progress=progress)  # fmt: skip
        # No Event: the phase and the WorkersRunning condition say it, and in a burst an Event per job is
        # a request per job that adds nothing (kwok's or the kubelet's Started events name each pod).
    elif progress != status.progress:
        new = status.model_copy(update={"progress": progress})
    if new is not status:
        out.actions = [a for a in out.actions if not isinstance(a, PatchStatus)] + [_patch(job, new)]
    return out, len(current) < expected


def _throughput(spec: LlamaJobSpec, status: LlamaJobStatus) -> RecordThroughput | None:
    """What a finished training job teaches its pool: its measured tokens/s with the facts to predict it."""
    progress, nodes, per_node = status.progress, status.nodes, status.devices_per_node
    if spec.training is None or not (
        status.pool and nodes and per_node and progress and progress.tokens_per_second
    ):
        return None
    sample = Sample(
        mode="train",
        precision=spec.training.precision,
        tokens_per_second=progress.tokens_per_second,
        arch=Arch.of(shape_of(spec.model)),
        devices_per_node=per_node,
        nodes=nodes,
        sequence_length=spec.training.sequence_length,
        activation_checkpointing=bool(status.activation_checkpointing),
    )
    return RecordThroughput(status.pool, sample)


def refresh_cost(job: JobView, now: datetime) -> JobActions:
    """Bring accruedCost up to date (a timer calls this for active jobs)."""
    out = JobActions(job.key)
    status = job.status
    cost = job_cost(status, now)
    if cost != status.accrued_cost:
        out.actions.append(_patch(job, status.model_copy(update={"accrued_cost": cost})))
    return out


def reconcile_job(ctx: JobContext, settings: Settings) -> tuple[JobActions, str]:
    """Decide one job. Returns its actions and what it needs next: "plan", "ensure" (workers) or ""."""
    job, status, now = ctx.job, ctx.job.status, ctx.now
    out = JobActions(job.key)
    if job.spec is None:
        if status.phase != Phase.FAILED:
            message = job.spec_error or "spec is invalid"
            status = stop_probes(status, "the spec is invalid", now)
            new = transition(status, Phase.FAILED, "InvalidSpec", message, now, job.generation,
                             placements=close_placement(status.placements, now, "InvalidSpec"))  # fmt: skip
            out.actions += [_delete_all(job), _patch(job, new), _event(job, True, "InvalidSpec", message)]
        return out, ""
    if status.phase in TERMINAL_PHASES:
        return out, ""
    if job.spec.suspend:
        if status.phase != Phase.SUSPENDED:
            status = stop_probes(status, "the job was suspended", now)
            placements = close_placement(status.placements, now, "Suspended")
            new = transition(status, Phase.SUSPENDED, "Suspended", "spec.suspend is true; workers removed",
                             now, job.generation, placements=placements, node_names=[])  # fmt: skip
            out.actions += [
                _delete_all(job),
                _patch(job, new),
                _event(job, False, "Suspended", new.message or ""),
            ]
        return out, ""
    if status.phase is None or status.phase == Phase.SUSPENDED:
        reason = "Resumed" if status.phase == Phase.SUSPENDED else "Created"
        new = transition(status, Phase.QUEUED, reason, "waiting for placement", now, job.generation)
        out.actions.append(_patch(job, new))
        return out, "plan"
    if status.phase == Phase.QUEUED:
        # Probing (lifecycle/probing.py, with what the snapshot knows of its attempts) or to be planned.
        return out, "probes" if active_probes(status) else "plan"
    actions, ensure = track_attempt(ctx, settings)
    return actions, "ensure" if ensure else ""
