"""What `llamaop report` shows of one LlamaJob, from its status alone: per candidate pool the estimate, what
a probe measured there, and (for a finished job) what the run really cost and took.

The estimate of a probed pool is the one made before its probe (the probe record keeps it): after the
probes the planner re-prices measured pools at their measured speed, so the candidate table then holds
measured figures. Pools that were not probed keep the candidate table's estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from llama_operator.api import LlamaJobSpec, LlamaJobStatus, ProbeRecord


@dataclass(frozen=True)
class Row:
    """One candidate pool: estimated and (where probed) measured speed, time and cost of the whole job."""

    pool: str
    accelerator: str
    fits: bool
    verdict: str
    chosen: bool
    est_tokens_per_second: float | None = None
    est_hours: float | None = None
    est_cost: float | None = None
    est_cost_per_million: float | None = None
    probe_phase: str = ""
    probe_reason: str = ""
    probe_cost: float | None = None
    startup_seconds: float | None = None
    compile_seconds: float | None = None
    measured_tokens_per_second: float | None = None
    measured_hours: float | None = None
    measured_cost: float | None = None
    measured_cost_per_million: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Actual:
    """A finished (or running) job as it went: what it cost and took against the estimate it was placed on."""

    pool: str
    phase: str
    est_hours: float | None
    est_cost: float | None
    hours: float | None
    cost: float | None
    """accruedCost less what the probes cost: the run itself."""
    tokens_per_second: float | None
    cost_per_million: float | None


@dataclass(frozen=True)
class Report:
    job: str
    phase: str
    reason: str
    message: str
    chosen: str | None
    tokens: int
    """Tokens the whole job trains on."""
    rows: list[Row] = field(default_factory=list)
    probes_cost: float = 0.0
    accrued_cost: float | None = None
    actual: Actual | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _probe_by_pool(status: LlamaJobStatus) -> dict[str, ProbeRecord]:
    """The latest probe of each pool (a resumed job may have probed twice)."""
    return {p.pool: p for p in status.probes}


def _hours_between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else max(0.0, (end - start).total_seconds() / 3600)


def build(obj: Mapping[str, Any], now: datetime | None = None) -> Report:
    """The report of a LlamaJob object (as the API server returns it, or its YAML)."""
    meta = obj.get("metadata") or {}
    spec = LlamaJobSpec.model_validate(obj.get("spec") or {})
    status = LlamaJobStatus.model_validate(obj.get("status") or {})
    tokens = 0
    if spec.training is not None:
        t = spec.training
        tokens = t.total_steps() * t.batch_size * t.sequence_length
    probes = _probe_by_pool(status)
    rows: list[Row] = []
    for c in status.candidates:
        probe = probes.get(c.pool)
        est = (
            (probe.estimated_tokens_per_second, probe.estimated_hours, probe.estimated_cost,
             probe.estimated_cost_per_million_tokens)
            if probe is not None
            else (c.tokens_per_second, c.hours, c.cost, c.cost_per_million_tokens)
        )  # fmt: skip
        rows.append(
            Row(
                pool=c.pool,
                accelerator=c.accelerator,
                fits=c.fits,
                verdict=c.verdict,
                chosen=c.pool == status.pool and status.phase not in (None, "Queued"),
                est_tokens_per_second=est[0],
                est_hours=est[1],
                est_cost=est[2],
                est_cost_per_million=est[3],
                probe_phase=probe.phase if probe else "",
                probe_reason=probe.reason if probe else "",
                probe_cost=probe.cost if probe else None,
                startup_seconds=probe.startup_seconds if probe else None,
                compile_seconds=probe.compile_seconds if probe else None,
                measured_tokens_per_second=probe.measured_tokens_per_second if probe else None,
                measured_hours=probe.measured_hours if probe else None,
                measured_cost=probe.measured_cost if probe else None,
                measured_cost_per_million=probe.measured_cost_per_million_tokens if probe else None,
                note=c.note,
            )
        )
    probes_cost = round(sum(p.cost or 0.0 for p in status.probes), 6)
    actual = None
    if status.pool and status.phase in ("Running", "Succeeded", "Failed"):
        end = status.completion_time or (now if status.phase == "Running" else None)
        hours = _hours_between(status.start_time, end)
        spent = None if status.accrued_cost is None else max(0.0, status.accrued_cost - probes_cost)
        rate = status.progress.tokens_per_second if status.progress else None
        actual = Actual(
            pool=status.pool,
            phase=str(status.phase),
            est_hours=status.estimated_hours,
            est_cost=status.estimated_cost,
            hours=hours,
            cost=spent,
            tokens_per_second=rate,
            cost_per_million=spent / tokens * 1e6 if spent is not None and tokens else None,
        )
    return Report(
        job=f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}",
        phase=str(status.phase or "New"),
        reason=status.reason or "",
        message=status.message or "",
        chosen=status.pool,
        tokens=tokens,
        rows=rows,
        probes_cost=probes_cost,
        accrued_cost=status.accrued_cost,
        actual=actual,
    )
