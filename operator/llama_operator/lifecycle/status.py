"""Status arithmetic: the phase machine's writes, conditions, accrued cost and progress."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llama_operator.api import Condition, LlamaJobStatus, PlacementRecord, ProbeRecord, Progress
from llama_operator.api.types import Phase

ACTIVE_PHASES = (Phase.PLACED, Phase.RUNNING)
TERMINAL_PHASES = (Phase.SUCCEEDED, Phase.FAILED)
PROBE_ACTIVE = ("Pending", "Running")
"""Probe phases that hold their nodes (the others ended: Measured, Failed, TimedOut)."""


def active_probes(status: LlamaJobStatus) -> list[ProbeRecord]:
    """The job's probes still running (booked on their nodes)."""
    return [p for p in status.probes if p.phase in PROBE_ACTIVE]


def holds_nodes(status: LlamaJobStatus) -> bool:
    """Whether the job holds nodes: placed or running, or Queued with probes running."""
    return status.phase in ACTIVE_PHASES or (status.phase == Phase.QUEUED and bool(active_probes(status)))


def probe_cost(probe: ProbeRecord, now: datetime) -> float:
    """USD a probe cost: its price for as long as it held its nodes (until now while it runs)."""
    if probe.started is None or not probe.price_per_hour:
        return 0.0
    end = probe.ended or now
    return probe.price_per_hour * max(0.0, (end - probe.started).total_seconds()) / 3600


def job_cost(status: LlamaJobStatus, now: datetime) -> float:
    """accruedCost: every placement and every probe."""
    probes = sum(probe_cost(p, now) for p in status.probes)
    return round(accrued_cost(status.placements, now) + probes, 4)


def dump(status: LlamaJobStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def accrued_cost(placements: Sequence[PlacementRecord], now: datetime) -> float:
    """USD spent over all attempts: each placement's price for as long as it held its nodes."""
    total = 0.0
    for rec in placements:
        if rec.time is None or not rec.price_per_hour:
            continue
        end = rec.ended or now
        total += rec.price_per_hour * max(0.0, (end - rec.time).total_seconds()) / 3600
    return round(total, 4)


def close_placement(
    placements: Sequence[PlacementRecord], now: datetime, outcome: str
) -> list[PlacementRecord]:
    """History with the open placement (if any) ended now with `outcome`."""
    out = list(placements)
    if out and out[-1].ended is None:
        out[-1] = out[-1].model_copy(update={"ended": now, "outcome": outcome})
    return out


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    out = []
    found = False
    for cond in conditions:
        if cond.type == type_:
            found = True
            moved = cond.status != value
            cond = Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=now if moved else cond.last_transition_time,
                observed_generation=generation,
            )
        out.append(cond)
    if not found:
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out


def phase_conditions(
    status: LlamaJobStatus, phase: Phase, reason: str, message: str, now: datetime, generation: int
) -> list[Condition]:
    """The standard conditions a phase implies: Placed, Running, Complete, Failed, Suspended."""
    conds = list(status.conditions)
    placed = phase in (Phase.PLACED, Phase.RUNNING, Phase.SUCCEEDED)
    table = {
        "Placed": (placed, reason if phase == Phase.PLACED or not placed else "Placed"),
        "Running": (phase == Phase.RUNNING, reason),
        "Complete": (phase == Phase.SUCCEEDED, reason),
        "Failed": (phase == Phase.FAILED, reason),
        "Suspended": (phase == Phase.SUSPENDED, reason),
    }
    for type_, (value, why) in table.items():
        if value or any(c.type == type_ for c in conds):
            conds = set_condition(conds, type_, value, why, message if value else "", now, generation)
    return conds


def transition(
    status: LlamaJobStatus,
    phase: Phase,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
    *,
    observe: bool = True,
    **updates: Any,
) -> LlamaJobStatus:
    """A copy of `status` in `phase`, with conditions and accrued cost brought along.

    `observe` marks the spec generation as acted upon; a transition that only follows the workers (to
    Running, say) leaves observedGeneration alone, so a spec change made meanwhile is still noticed.
    """
    new = status.model_copy(update=updates)
    extra: dict[str, Any] = {"observed_generation": generation} if observe else {}
    return new.model_copy(
        update={
            "phase": phase,
            "reason": reason,
            "message": message,
            "conditions": phase_conditions(new, phase, reason, message, now, generation),
            "accrued_cost": job_cost(new, now),
            **extra,
        }
    )


# Attempt endings that are not the workers' fault and so do not use up backoffLimit.
NOT_FAILURES = frozenset({"Succeeded", "Suspended", "SpecChanged", "InvalidSpec"})


def retries_used(placements: Sequence[PlacementRecord]) -> int:
    """Retries and failovers so far: closed placements that ended in a failure."""
    return sum(1 for rec in placements if rec.ended is not None and rec.outcome not in NOT_FAILURES)


def progress_from_annotation(raw: Mapping[str, Any]) -> Progress | None:
    """The runtime's progress JSON (camelCase) as the status model; None when unreadable."""
    try:
        progress = Progress.model_validate(raw)
    except ValueError:
        return None
    if progress.step is not None and progress.total_steps:
        progress = progress.model_copy(update={"percent": int(100 * progress.step / progress.total_steps)})
    return progress
