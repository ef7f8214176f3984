"""Probes in the engine: which pools a job measures itself on, and what those measurements make of it.

A job with `placement.probe` is first run for a few steps on its best candidates by estimated cost, one
per accelerator family (or model), among the pools with room now. Each probe is the job as it would run
there: the same model, sequence length, batch, nodes and devices (the candidate's best option), so what
it measures is the job's own speed on that pool, not an extrapolation.

What a probe measured enters the engine as this job's speed factor on the pool: measured tokens/s over
what the calibrated speed model predicts for exactly the probed shape (`learning.predicted`, the same
ratio finished jobs teach a pool). It replaces the pool's learned factor for this job, and the measured
start-up and compile time replace the catalog's start-up, so the engine re-prices every option on the
pool at the measured speed and places the job by measured cost. A probe that failed or timed out rules
its pool out for the job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from llama_operator.api.job import ProbeSpec
from llama_operator.catalog import Calibration
from llama_operator.planning import learning
from llama_operator.planning.decision import Candidate
from llama_operator.planning.explain import PoolEval
from llama_operator.planning.learning import Sample
from llama_operator.planning.pools import PoolType
from llama_operator.planning.workload import Workload

PROBING = "Probing"
"""Verdict of a candidate being probed, and the reason of a job whose probes run."""
RULED_OUT = "ProbeFailed"
"""Verdict (and engine block) of a pool whose probe failed or timed out."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one of this job's probes found on a pool: its measured speed, or why the pool is out."""

    sample: Sample | None = None
    """The probed shape and its measured tokens/s (all nodes)."""
    startup_seconds: float = 0.0
    """Start-up and compile time the probe measured: the job's start-up on the pool."""
    ruled_out: str = ""
    """Why the pool is ruled out (the probe's reason and message); empty when measured."""


def factor(measurement: Measurement, pool: PoolType, calibration: Calibration, no_efa: float) -> float | None:
    """Measured over calibrated tokens/s of the probed shape on this pool (None: nothing measured)."""
    sample = measurement.sample
    if sample is None or sample.tokens_per_second <= 0:
        return None
    expected = learning.predicted(sample, pool, calibration, no_efa)
    return sample.tokens_per_second / expected if expected > 0 else None


def with_startup(unit: PoolType, seconds: float) -> PoolType:
    """The pool's hardware with a measured start-up instead of the catalog's."""
    return replace(unit, device=unit.device.model_copy(update={"startup_minutes": seconds / 60.0}))


def probe_hours(work: Workload, probe: ProbeSpec, tokens_per_second: float, startup_minutes: float) -> float:
    """Estimated hours of one probe: the catalog's start-up, then warm-up and measured steps."""
    steps = probe.warmup_steps + probe.steps
    tokens = steps * work.batch_size * work.sequence_length
    return startup_minutes / 60.0 + tokens / max(tokens_per_second, 1e-9) / 3600.0


def probe_cost(work: Workload, probe: ProbeSpec, ev: PoolEval) -> float:
    option, ptype = ev.best_now, ev.pool.type
    assert option is not None and ptype is not None
    hours = probe_hours(work, probe, option.tokens_per_second, ptype.device.startup_minutes)
    return option.price_per_hour * hours


def select(work: Workload, probe: ProbeSpec, evals: Sequence[PoolEval]) -> tuple[list[PoolEval], str]:
    """The pools to probe, best estimated first: one per family (or accelerator) among those with room
    now, at most `probe.candidates`, within `probe.maxCost` by estimated probe cost. Also why none was
    taken when the list is empty."""
    ready = sorted((e for e in evals if e.best_now is not None), key=lambda e: (e.best_now_key, e.pool.name))
    picked: list[PoolEval] = []
    groups: set[str] = set()
    budget = probe.max_cost
    spent = 0.0
    dearest = ""
    for ev in ready:
        ptype = ev.pool.type
        assert ptype is not None
        group = ptype.family if probe.per == "family" else ptype.accelerator
        if group in groups:
            continue
        cost = probe_cost(work, probe, ev)
        if budget is not None and spent + cost > budget:
            dearest = dearest or f"{ev.pool.name} est. ${cost:,.2f}"
            continue
        groups.add(group)
        picked.append(ev)
        spent += cost
        if len(picked) == probe.candidates:
            break
    why = ""
    if not picked:
        why = f"every probe is estimated above probe.maxCost ${budget:,.2f} ({dearest})" if dearest else ""
    return picked, why


def relabel(
    candidates: Sequence[Candidate], probed: Mapping[str, str], skipped: str
) -> tuple[Candidate, ...]:
    """The candidate table of a probe decision: probed pools say so; nothing is Chosen yet."""
    out = []
    for c in candidates:
        if c.pool in probed:
            c = replace(c, verdict=PROBING, note=probed[c.pool])
        elif c.verdict == "Chosen":
            c = replace(c, verdict="Available", note=f"not probed: {skipped}" if skipped else "not probed")
        out.append(c)
    return tuple(out)


def mark_measured(
    candidates: Sequence[Candidate], measured: Mapping[str, Measurement]
) -> tuple[Candidate, ...]:
    """Rows priced at a probe's measured speed say so."""
    out = []
    for c in candidates:
        m = measured.get(c.pool)
        if m is not None and m.sample is not None and c.fits:
            c = replace(c, note=f"{c.note}; measured by probe" if c.note else "measured by probe")
        out.append(c)
    return tuple(out)
