"""The probe state machine: a Queued job's probe attempts, from booked to measured (or ruled out) and charged.

A job with `placement.probe` gets a `probe` decision on its first placement (planning/probes.py): each
probed pool is an attempt of its own, its nodes booked in `status.probes` before any pod exists (the same
status-first order as a placement, so a restart re-creates missing pods under the same deterministic names
and never books twice). While a probe is Pending or Running the job stays Queued (condition Probing).

Per probe: Pending (pods not all running) -> Running -> Measured (rank 0's progress annotation shows
`probe.steps` measured steps) | Failed (a worker failed, a node went, the pods vanished, or the run ended
without a measurement) | TimedOut (`probe.timeout` since its pods were created, or what the probes cost
reached `probe.maxCost`). Every probe is charged at its price for as long as it held its nodes; the cost
is in the record and in the job's accruedCost. When none is active any more the job goes to the planner
with what was measured (`measurements`): measured pools priced at their measured speed, failed ones ruled
out. If none measured, `onAllFailed` says whether the job is placed by estimate or fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from llama_operator.api import LlamaJobSpec, LlamaJobStatus, ProbeRecord, ProbeSpec, duration_seconds
from llama_operator.api.types import Phase
from llama_operator.lifecycle.actions import (
    CreateWorkers,
    DeleteWorkers,
    JobActions,
    PatchStatus,
    RecordEvent,
    RecordThroughput,
)
from llama_operator.lifecycle.status import (
    PROBE_ACTIVE,
    active_probes,
    dump,
    probe_cost,
    set_condition,
    transition,
)
from llama_operator.lifecycle.views import JobView, NodeView, PodView
from llama_operator.planning.decision import Candidate, Decision
from llama_operator.planning.learning import Sample
from llama_operator.planning.llama import shape_of
from llama_operator.planning.probes import Measurement
from llama_operator.planning.speed import Arch
from llama_operator.workers import attempt_selector, selector_string

PROBING_CONDITION = "Probing"
"""True while probes run; False afterwards with the outcome (Measured, AllProbesFailed)."""
ALL_FAILED = "ProbesFailed"


STOPPED = "Stopped"
"""Reason of a probe ended by the job (suspended, deleted spec): it says nothing about its pool."""


def wants_probe(spec: LlamaJobSpec, status: LlamaJobStatus) -> ProbeSpec | None:
    """The probe to run before the job's first placement: never after one, nor once a probe ended by itself
    (probes stopped by a suspension are run again on resume)."""
    probe = spec.placement.probe
    if probe is None or spec.mode != "train" or status.placements:
        return None
    if any(p.reason != STOPPED for p in status.probes):
        return None
    return probe


def stop_probes(status: LlamaJobStatus, why: str, now: datetime) -> LlamaJobStatus:
    """The job's running probes ended (charged up to now) because the job itself stopped."""
    if not active_probes(status):
        return status
    probes = [_end(p, "Failed", STOPPED, why, now) if p.phase in PROBE_ACTIVE else p for p in status.probes]
    return status.model_copy(update={"probes": probes})


def probe_records(decision: Decision, first_attempt: int, now: datetime) -> list[ProbeRecord]:
    """The `status.probes` entries of a probe decision: one attempt each, its nodes booked."""
    out = []
    for i, plan in enumerate(decision.probes):
        d = plan.placement
        out.append(
            ProbeRecord(
                pool=d.pool or "",
                accelerator=d.accelerator or "",
                family=d.family or "",
                capacity_type=d.capacity_type or "",
                attempt=first_attempt + i,
                nodes=d.nodes,
                devices_per_node=d.devices_per_node,
                node_names=list(d.node_names),
                activation_checkpointing=d.activation_checkpointing,
                phase="Pending",
                reason="Created",
                message=f"estimated ${plan.est_cost:,.4f}",
                price_per_hour=_round(d.price_per_hour, 4),
                started=now,
                cost=0.0,
                estimated_tokens_per_second=_round(d.est_tokens_per_second, 1),
                estimated_hours=_round(d.est_hours, 4),
                estimated_cost=_round(d.est_cost, 4),
                estimated_cost_per_million_tokens=_round(d.cost_per_million_tokens, 4),
            )
        )
    return out


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _job_tokens(spec: LlamaJobSpec) -> int:
    t = spec.training
    return 0 if t is None else t.total_steps() * t.batch_size * t.sequence_length


def _measured(
    probe: ProbeRecord, spec: LlamaJobSpec, raw: Mapping[str, object], now: datetime
) -> ProbeRecord:
    """The probe Measured from rank 0's annotation, with the whole job priced at the measured speed."""
    rate = float(raw.get("measuredTokensPerSecond") or 0.0)  # type: ignore[arg-type]
    startup = float(raw.get("startupSeconds") or 0.0)  # type: ignore[arg-type]
    compiled = float(raw.get("compileSeconds") or 0.0)  # type: ignore[arg-type]
    steps = int(raw.get("measuredSteps") or 0)  # type: ignore[call-overload]
    tokens = _job_tokens(spec)
    hours = tokens / rate / 3600 + (startup + compiled) / 3600
    price = probe.price_per_hour or 0.0
    # Per million of the job's tokens, start-up included: what the engine's costPerMillionTokens means.
    per_million = price * hours / tokens * 1e6 if tokens else price / (rate * 3600) * 1e6
    return _end(
        probe.model_copy(
            update={
                "measured_tokens_per_second": round(rate, 1),
                "measured_steps": steps,
                "startup_seconds": round(startup, 3),
                "compile_seconds": round(compiled, 3),
                "measured_hours": round(hours, 4),
                "measured_cost": round(price * hours, 2),
                "measured_cost_per_million_tokens": round(per_million, 4),
            }
        ),
        "Measured",
        "Measured",
        f"{rate:,.1f} tokens/s over {steps} steps after {raw.get('warmupSteps', '?')} warm-up "
        f"(estimated {probe.estimated_tokens_per_second or 0:,.1f})",
        now,
    )


def _end(probe: ProbeRecord, phase: str, reason: str, message: str, now: datetime) -> ProbeRecord:
    ended = probe.model_copy(update={"phase": phase, "reason": reason, "message": message, "ended": now})
    return ended.model_copy(update={"cost": round(probe_cost(ended, now), 6)})


def step_probe(
    probe: ProbeRecord,
    spec: LlamaJobSpec,
    pods: Sequence[PodView],
    nodes: Mapping[str, NodeView],
    now: datetime,
    seen: bool,
) -> ProbeRecord:
    """One probe's next state from its pods and nodes (an ended probe stays as it is)."""
    if probe.phase not in PROBE_ACTIVE:
        return probe
    config = spec.placement.probe or ProbeSpec()
    current = [p for p in pods if p.attempt == probe.attempt and not p.deleting]
    expected = len(probe.node_names)
    for name in probe.node_names:
        node = nodes.get(name)
        if node is None:
            return _end(probe, "Failed", "NodeLost", f"node {name} is gone", now)
        if node.interrupted:
            return _end(probe, "Failed", "SpotInterruption", f"node {name} is being reclaimed", now)
        if not node.ready:
            return _end(probe, "Failed", "NodeNotReady", f"node {name} is NotReady", now)
    for pod in current:
        if pod.disruption:
            return _end(probe, "Failed", "Evicted", f"pod {pod.name}: {pod.disruption}", now)
        if pod.phase == "Failed":
            why = pod.exit_reason or "Error"
            return _end(
                probe, "Failed", "WorkerFailed", f"pod {pod.name} exited {pod.exit_code} ({why})", now
            )
    rank0 = next((p.progress for p in current if p.rank == 0 and p.progress), None)
    measured_steps = int((rank0 or {}).get("measuredSteps") or 0)
    rate = float((rank0 or {}).get("measuredTokensPerSecond") or 0.0)
    if rank0 is not None and rate > 0 and measured_steps >= config.steps:
        return _measured(probe, spec, rank0, now)
    if expected and len(current) == expected and all(p.phase == "Succeeded" for p in current):
        if rank0 is not None and rate > 0:  # fewer steps than asked (a short job): still a measurement
            return _measured(probe, spec, rank0, now)
        return _end(probe, "Failed", "NoMeasurement", "the workers exited without a measured speed", now)
    if seen and len(current) < expected:
        return _end(probe, "Failed", "WorkerLost", f"{expected - len(current)} probe pod(s) disappeared", now)
    timeout = duration_seconds(config.timeout)
    if probe.started is not None and (now - probe.started).total_seconds() > timeout:
        return _end(probe, "TimedOut", "Timeout", f"not measured within {config.timeout}", now)
    running = expected > 0 and len(current) == expected and all(p.phase == "Running" for p in current)
    phase = "Running" if running else "Pending"
    reason = "WorkersRunning" if running else probe.reason
    message = probe.message if phase == probe.phase else f"{len(current)} of {expected} probe pod(s) {phase}"
    if (phase, reason, message) == (probe.phase, probe.reason, probe.message):
        return probe  # the running cost is charged live (status.job_cost); no write per pass for it
    cost = round(probe_cost(probe, now), 6)
    return probe.model_copy(update={"phase": phase, "reason": reason, "message": message, "cost": cost})


def over_budget(probes: Sequence[ProbeRecord], config: ProbeSpec, now: datetime) -> list[ProbeRecord]:
    """Active probes stopped (TimedOut, ProbeBudget) once what all probes cost reaches probe.maxCost."""
    if config.max_cost is None:
        return list(probes)
    spent = sum(probe_cost(p, now) for p in probes)
    if spent < config.max_cost:
        return list(probes)
    message = f"the probes cost ${spent:,.4f}, probe.maxCost is ${config.max_cost:,.4f}"
    return [
        _end(p, "TimedOut", "ProbeBudget", message, now) if p.phase in PROBE_ACTIVE else p for p in probes
    ]


def sample_of(probe: ProbeRecord, spec: LlamaJobSpec) -> Sample | None:
    """What a measured probe teaches its pool (the same Sample a finished job records)."""
    if spec.training is None or probe.phase != "Measured" or not probe.measured_tokens_per_second:
        return None
    return Sample(
        mode="train",
        precision=spec.training.precision,
        tokens_per_second=probe.measured_tokens_per_second,
        arch=Arch.of(shape_of(spec.model)),
        devices_per_node=probe.devices_per_node,
        nodes=probe.nodes,
        sequence_length=spec.training.sequence_length,
        activation_checkpointing=probe.activation_checkpointing,
    )


def sample_id(uid: str, probe: ProbeRecord) -> str:
    return f"{uid}/a{probe.attempt}"


def lessons(
    uid: str, spec: LlamaJobSpec, status: LlamaJobStatus, learned_from: Mapping[str, Sequence[str]]
) -> list[RecordThroughput]:
    """What the job's measured probes teach their pools and the pools have not learned yet
    (`learned_from`: pool -> its status.learnedFrom). Asked again after a restart until the pool shows
    it, and never learned twice: a probe's sample carries its id."""
    out = []
    for probe in status.probes:
        sample = sample_of(probe, spec)
        key = sample_id(uid, probe)
        if sample is not None and key not in learned_from.get(probe.pool, ()):
            out.append(RecordThroughput(probe.pool, sample, key))
    return out


def measurements(spec: LlamaJobSpec, status: LlamaJobStatus) -> dict[str, Measurement]:
    """Pool -> what the job's ended probes found there, for the planner (JobRequest.measured)."""
    out: dict[str, Measurement] = {}
    for probe in status.probes:
        if probe.phase == "Measured":
            sample = sample_of(probe, spec)
            startup = (probe.startup_seconds or 0.0) + (probe.compile_seconds or 0.0)
            out[probe.pool] = Measurement(sample=sample, startup_seconds=startup)
        elif probe.phase in ("Failed", "TimedOut") and probe.reason != STOPPED:
            out[probe.pool] = Measurement(ruled_out=f"{probe.reason}: {probe.message}")
    return out


def priced(probes: Sequence[ProbeRecord], candidates: Sequence[Candidate]) -> list[ProbeRecord]:
    """Measured probes with the whole job priced as the planner priced it at the measured speed (its
    candidate row: the shape it would run, spot and checkpoint overheads included), so that a probe's
    measured cost is the figure the job was placed by."""
    rows = {c.pool: c for c in candidates if c.fits and c.cost is not None}
    out = []
    for probe in probes:
        row = rows.get(probe.pool)
        if probe.phase == "Measured" and row is not None:
            probe = probe.model_copy(
                update={
                    "measured_hours": _round(row.hours, 4),
                    "measured_cost": _round(row.cost, 2),
                    "measured_cost_per_million_tokens": _round(row.cost_per_million_tokens, 4),
                }
            )
        out.append(probe)
    return out


def none_measured(status: LlamaJobStatus) -> bool:
    """The job probed and every probe ended without a measurement."""
    ended = [p for p in status.probes if p.reason != STOPPED]
    return bool(ended) and all(p.phase in ("Failed", "TimedOut") for p in ended)


def track_probes(
    job: JobView,
    pods: Sequence[PodView],
    nodes: Mapping[str, NodeView],
    now: datetime,
    seen: Mapping[int, bool],
    created: Mapping[int, bool],
    create: Mapping[int, CreateWorkers] | None = None,
) -> tuple[JobActions, str]:
    """A Queued job with probes: step each, charge it, learn from what was measured, clean up what ended.

    `seen[attempt]`: all that probe's pods were once seen (a missing one is then lost). `created[attempt]`:
    this process created its pods; `create[attempt]` re-creates them otherwise (after a restart between
    the status write and the pods). Returns the actions and "plan" once no probe is active any more."""
    assert job.spec is not None
    spec, status = job.spec, job.status
    config = spec.placement.probe or ProbeSpec()
    out = JobActions(job.key)
    before = {p.attempt: p for p in status.probes}
    probes = [step_probe(p, spec, pods, nodes, now, seen.get(p.attempt, False)) for p in status.probes]
    probes = over_budget(probes, config, now)
    events: list[RecordEvent] = []
    for probe in probes:
        old = before.get(probe.attempt)
        if old is not None and old.phase in PROBE_ACTIVE and probe.phase not in PROBE_ACTIVE:
            warning = probe.phase != "Measured"
            kind = "Warning" if warning else "Normal"
            reason = f"Probe{probe.phase}"
            text = f"probe on {probe.pool}: {probe.reason}: {probe.message}"
            events.append(RecordEvent(job.namespace, job.name, job.uid, kind, reason, text))
    active = [p for p in probes if p.phase in PROBE_ACTIVE]
    # Pods of ended probes go (also when an earlier pass ended them and its deletion was lost).
    for probe in probes:
        if probe.phase not in PROBE_ACTIVE and any(
            p.attempt == probe.attempt and not p.deleting for p in pods
        ):
            selector = selector_string(attempt_selector(job.name, probe.attempt))
            out.actions.append(DeleteWorkers(job.namespace, job.name, selector))
    new = status.model_copy(update={"probes": probes})
    need = ""
    if active:
        waiting = ", ".join(f"{p.pool} {p.phase}" for p in active)
        conds = set_condition(new.conditions, PROBING_CONDITION, True, "Probing", f"probes: {waiting}",
                              now, job.generation)  # fmt: skip
        new = new.model_copy(update={"conditions": conds})
        if new != status:
            new = transition(new, Phase.QUEUED, "Probing", status.message or "measuring", now, job.generation,
                             observe=False)  # fmt: skip
        for probe in active:
            missing = sum(1 for p in pods if p.attempt == probe.attempt) < len(probe.node_names)
            if missing and not created.get(probe.attempt) and create and probe.attempt in create:
                out.actions.append(create[probe.attempt])
    else:
        probes = [p for p in probes if p.reason != STOPPED] or probes  # this round's, for the messages
        measured = [p for p in probes if p.phase == "Measured"]
        why = "; ".join(f"{p.pool}: {p.reason}" for p in probes)
        phase, reason, outcome = Phase.QUEUED, ALL_FAILED, ALL_FAILED
        if measured:
            best = min(measured, key=lambda p: (p.measured_cost or float("inf"), p.pool))
            message = f"{len(measured)} of {len(probes)} probe(s) measured; cheapest measured: {best.pool}"
            reason, outcome = "Probed", "Measured"
        elif config.on_all_failed == "fail":
            message = f"no probe measured a speed ({why}); probe.onAllFailed is fail"
            phase = Phase.FAILED
            events.append(RecordEvent(job.namespace, job.name, job.uid, "Warning", ALL_FAILED, message))
        else:
            message = f"no probe measured a speed ({why}); placing by estimate on the pools left"
        conds = set_condition(new.conditions, PROBING_CONDITION, False, outcome, message, now, job.generation)
        failed = phase == Phase.FAILED
        ended = {"completion_time": now} if failed else {}
        new = transition(new.model_copy(update={"conditions": conds}), phase, reason, message, now,
                         job.generation, observe=failed, **ended)  # fmt: skip
        need = "" if failed else "plan"
    if new != status:
        # Status first: a probe's result is durable before its pods go and before the job is placed.
        out.actions.insert(0, PatchStatus(job.namespace, job.name, dump(new)))
    out.actions += events
    return out, need
