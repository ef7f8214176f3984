"""The speed model fitted to published measurements: the efficiencies in catalog/calibration.yaml.

Each measurement in catalog/measurements.yaml is predicted by the speed model (planning/speed.py) from
its model's FLOPs and bytes, its accelerator's peaks and the efficiencies, and the fit chooses the
efficiencies that minimise the squared log error. In log space each efficiency is a sum:

    ln mfu(accelerator, precision) = all + family + accelerator + precision offset      (training)
    ln bandwidth efficiency, ln compute efficiency: the same four terms each           (inference)

plus one node retention (training, per doubling of nodes) and one replica retention (inference, per
doubling of a replica's devices). Gaussian priors on the terms (PRIORS) keep an accelerator with few
measurements near its family and one with none at its family's or all accelerators' fit; they are the
model's only choices that are not data. Afterwards `consistent` keeps the dominance order (an accelerator
with at least another's FLOP/s, bandwidth and memory is never slower) by moving the estimate with less
evidence: an accelerator without measurements of its own takes a measured one's speed, and two measured
ones meet as their measurement counts weigh them (`isotonic`).

`calibrate` also refits without each measurement in turn (leave-one-out), so every row of the report
says how well the model predicts a figure it was not fitted to.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

from llama_operator.api.job import ModelSpec
from llama_operator.api.presets import PRESETS
from llama_operator.api.types import Mode
from llama_operator.catalog import (
    Accelerator,
    AcceleratorSpeeds,
    Calibration,
    Catalog,
    InferenceSpeed,
    Measurement,
    SpeedPrecision,
    TrainingSpeed,
)
from llama_operator.planning.llama import shape_of
from llama_operator.planning.speed import (
    Arch,
    decode_step,
    doubling_scale,
    inference_speed,
    prefill_seconds,
    training_speed,
    training_tokens_per_device,
)

# Expected log scatter between setups of one accelerator (frameworks, tuning, software versions).
SIGMA_RESIDUAL = 0.2
# (mean, standard deviation) in log space of each kind of term; only the means of the "all" terms set a
# scale, and they are weak (one e-fold), so the data decide wherever there are data.
PRIORS: dict[str, tuple[float, float]] = {
    "all": (math.log(0.4), 1.0),
    "family": (0.0, 0.5),
    "accelerator": (0.0, 0.35),
    "precision": (0.0, 0.5),
    "retention": (0.0, 0.1),
}
PRECISIONS: tuple[SpeedPrecision, ...] = ("bf16", "fp32", "fp8")
# Measurements closer than this are a tie when checking the order of accelerators.
TIE = 0.05


@dataclass(frozen=True, slots=True)
class Point:
    """A measurement with what the model needs to predict it."""

    measurement: Measurement
    arch: Arch
    device: Accelerator
    measured: float
    group: str
    """The accelerator whose fitted term this one shares (`twin`)."""

    @property
    def mode(self) -> Mode:
        return self.measurement.mode


def arch_of(model: str, catalog: Catalog) -> Arch:
    """A preset's or a measurement model's FLOP- and byte-relevant numbers."""
    if model in PRESETS:
        return Arch.of(shape_of(ModelSpec(preset=model)))  # type: ignore[arg-type]
    assert catalog.measurements is not None
    numbers = catalog.measurements.models[model]
    return Arch(numbers.parameters, numbers.layers, numbers.hidden, numbers.kv_width or numbers.hidden)


def points(catalog: Catalog) -> list[Point]:
    if catalog.measurements is None:
        return []
    return [
        Point(
            m,
            arch_of(m.model, catalog),
            catalog.accelerators[m.accelerator],
            m.value(),
            twin(m.accelerator, catalog),
        )
        for m in catalog.measurements.measurements
    ]


# ---------------------------------------------------------------- prediction


def predict(
    m: Measurement,
    arch: Arch,
    device: Accelerator,
    training: TrainingSpeed | None,
    inference: InferenceSpeed | None,
    node_retention: float,
    replica_retention: float,
) -> float:
    """The model's value for a measurement (same quantity as Measurement.value())."""
    precision = m.speed_precision
    if m.kind == "train":
        assert training is not None and m.sequence_length is not None
        per_node = training_tokens_per_device(
            arch.training_flops_per_token(m.sequence_length),
            device,
            precision,
            training,
            activation_checkpointing=m.activation_checkpointing,
        )
        return per_node * doubling_scale(m.nodes, node_retention)
    assert inference is not None and m.batch is not None
    batch, kv = m.batch, arch.kv_bytes_per_token(precision)

    def seconds(bytes_read: float, flops: float) -> float:
        return decode_step(
            bytes_read=bytes_read,
            flops=flops,
            devices=m.devices,
            device=device,
            precision=precision,
            speed=inference,
            replica_retention=replica_retention,
        ).seconds

    def step(attended: float) -> float:
        return seconds(
            arch.weight_bytes(precision) + batch * attended * kv,
            batch * arch.decode_flops_per_token(attended),
        )

    def prefill(sequences: int, prompt: int) -> float:
        return prefill_seconds(
            sequences * prompt * arch.decode_flops_per_token(prompt / 2),
            devices=m.devices,
            device=device,
            precision=precision,
            efficiency=inference.compute_efficiency,
            replica_retention=replica_retention,
        )

    if m.kind == "decode":
        assert m.context is not None
        gap = step(m.context)
        if m.input_length and m.output_length:
            # Continuous batching: the other requests' prompts are computed between this one's tokens,
            # and a figure that includes the first token also carries this request's own prompt.
            prompts = m.in_flight - 1 + (1 if m.first_token_included else 0)
            gap += prompts * prefill(1, m.input_length) / m.output_length
        return 1.0 / gap
    assert m.input_length is not None and m.output_length is not None
    prompt, out = m.input_length, m.output_length
    return batch * out / (prefill(batch, prompt) + out * step(prompt + out / 2))


def predict_calibrated(point: Point, calibration: Calibration) -> float:
    m, device = point.measurement, point.device
    precision = m.speed_precision
    return predict(
        m,
        point.arch,
        device,
        training_speed(calibration, m.accelerator, device, precision) if m.mode == "train" else None,
        inference_speed(calibration, m.accelerator, device, precision) if m.mode != "train" else None,
        calibration.node_retention,
        calibration.replica_retention,
    )


# ---------------------------------------------------------------- the fit


@dataclass(slots=True)
class _Problem:
    """Parameters of one mode's fit: name -> index, prior of each."""

    names: list[str] = field(default_factory=list)
    priors: list[tuple[float, float]] = field(default_factory=list)

    def add(self, name: str, kind: str) -> None:
        if name not in self.names:
            self.names.append(name)
            self.priors.append(PRIORS[kind])

    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


_TERMS: dict[Mode, tuple[str, ...]] = {"train": ("t",), "inference": ("b", "c")}
_RETENTION: dict[Mode, str] = {"train": "t:nodes", "inference": "i:devices"}


def twin(name: str, catalog: Catalog) -> str:
    """The first accelerator of the catalog with the same specs and family: accelerators that are the same
    silicon (trn1 and inf2 share NeuronCore-v2, peaks, bandwidth and memory) share one fitted term."""
    device = catalog.accelerators[name]
    return next(
        other
        for other, d in catalog.accelerators.items()
        if d.family == device.family and _spec(d) == _spec(device)
    )


def _problem(mode: Mode, catalog: Catalog) -> _Problem:
    problem = _Problem()
    for term in _TERMS[mode]:
        problem.add(f"{term}:all", "all")
        for family in sorted({a.family for a in catalog.accelerators.values()}):
            problem.add(f"{term}:f:{family}", "family")
        for name in catalog.accelerators:
            problem.add(f"{term}:a:{twin(name, catalog)}", "accelerator")
        for precision in PRECISIONS[1:]:
            problem.add(f"{term}:p:{precision}", "precision")
    problem.add(_RETENTION[mode], "retention")
    return problem


def _log_efficiency(
    term: str,
    accelerator: str,
    family: str,
    precision: SpeedPrecision,
    theta: Sequence[float],
    index: Mapping[str, int],
) -> tuple[float, list[int]]:
    used = [index[f"{term}:all"], index[f"{term}:f:{family}"], index[f"{term}:a:{accelerator}"]]
    if precision != "bf16":
        used.append(index[f"{term}:p:{precision}"])
    return sum(theta[i] for i in used), used


def _log_pred(
    point: Point, theta: Sequence[float], index: Mapping[str, int]
) -> tuple[float, dict[int, float]]:
    """ln(prediction) and its gradient with respect to the parameters it uses."""
    m, device = point.measurement, point.device
    precision, family = m.speed_precision, device.family
    retention_index = index[_RETENTION[m.mode]]
    retention = math.exp(min(theta[retention_index], 0.0))  # a node or device never adds more than itself
    if m.mode == "train":
        lm, used = _log_efficiency("t", point.group, family, precision, theta, index)
        value = predict(m, point.arch, device, TrainingSpeed(mfu=1.0), None, retention, 1.0)
        doublings = math.log2(m.nodes) if m.nodes > 1 else 0.0
        grad = dict.fromkeys(used, 1.0)
        grad[retention_index] = doublings if theta[retention_index] < 0 else 0.0
        return math.log(value) + lm, grad

    lb, used_b = _log_efficiency("b", point.group, family, precision, theta, index)
    lc, used_c = _log_efficiency("c", point.group, family, precision, theta, index)

    def f(b: float, c: float, r: float) -> float:
        speed = InferenceSpeed.model_construct(
            bandwidth_efficiency=math.exp(b), compute_efficiency=math.exp(c)
        )
        return math.log(predict(m, point.arch, device, None, speed, 1.0, math.exp(min(r, 0.0))))

    r = theta[retention_index]
    base, h = f(lb, lc, r), 1e-5
    db, dc = (f(lb + h, lc, r) - base) / h, (f(lb, lc + h, r) - base) / h
    dr = (f(lb, lc, r + h) - base) / h if r < 0 else (f(lb, lc, r - h) - base) / -h
    grad: dict[int, float] = {}
    for i in used_b:
        grad[i] = grad.get(i, 0.0) + db
    for i in used_c:
        grad[i] = grad.get(i, 0.0) + dc
    grad[retention_index] = dr
    return base, grad


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the systems here are a few dozen unknowns)."""
    n = len(b)
    rows = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        for r in range(col + 1, n):
            k = rows[r][col] / lead
            if k:
                rows[r] = [x - k * y for x, y in zip(rows[r], rows[col], strict=True)]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (rows[r][n] - sum(rows[r][c] * out[c] for c in range(r + 1, n))) / rows[r][r]
    return out


def _objective(
    pts: Sequence[Point], theta: Sequence[float], problem: _Problem, index: Mapping[str, int]
) -> float:
    total = sum(((_log_pred(p, theta, index)[0] - math.log(p.measured)) / SIGMA_RESIDUAL) ** 2 for p in pts)
    return total + sum(((t - mu) / s) ** 2 for t, (mu, s) in zip(theta, problem.priors, strict=True))


def _fit_mode(pts: Sequence[Point], problem: _Problem, start: Sequence[float] | None = None) -> list[float]:
    """Levenberg-Marquardt on the log errors plus the priors."""
    index = problem.index()
    n = len(problem.names)
    theta = list(start) if start is not None else [mu for mu, _ in problem.priors]
    damping, best = 1e-3, _objective(pts, theta, problem, index)
    for _ in range(60):
        normal = [[0.0] * n for _ in range(n)]
        gradient = [0.0] * n
        for p in pts:
            value, grad = _log_pred(p, theta, index)
            residual = (math.log(p.measured) - value) / SIGMA_RESIDUAL**2
            items = list(grad.items())
            for i, gi in items:
                gradient[i] += gi * residual
                for j, gj in items:
                    normal[i][j] += gi * gj / SIGMA_RESIDUAL**2
        for i, (mu, s) in enumerate(problem.priors):
            normal[i][i] += 1.0 / s**2
            gradient[i] -= (theta[i] - mu) / s**2
        while True:
            damped = [
                [v + (damping * normal[i][i] if i == j else 0.0) for j, v in enumerate(row)]
                for i, row in enumerate(normal)
            ]
            step = _solve(damped, gradient)
            trial = [t + d for t, d in zip(theta, step, strict=True)]
            value = _objective(pts, trial, problem, index)
            if value <= best:
                theta, damping = trial, max(damping / 10, 1e-9)
                converged = best - value < 1e-9 * max(best, 1.0)
                best = value
                break
            damping *= 10
            if damping > 1e8:
                return theta
        if converged:
            break
    return theta


# ---------------------------------------------------------------- from parameters to the calibration


def _spec(device: Accelerator) -> tuple[float, ...]:
    return (
        device.peak_tflops,
        device.peak_tflops_fp32,
        device.peak_tflops_fp8 or 0.0,
        device.memory_bandwidth_tbs,
        device.memory_gib,
    )


def dominates(a: Accelerator, b: Accelerator) -> bool:
    """a has at least b's FLOP/s at every precision, bandwidth and memory."""
    return all(x >= y for x, y in zip(_spec(a), _spec(b), strict=True))


# Weight of an accelerator's own estimate when it has no measurement of its own (a family or global guess):
# against any measured accelerator it is the one that moves.
GUESS_WEIGHT = 1e-6


@dataclass(frozen=True, slots=True)
class _Component:
    """One absolute speed the dominance order applies to: an efficiency times the peak it scales."""

    mode: Mode
    kind: Literal["mfu", "bandwidth", "compute"]
    precision: SpeedPrecision

    def scale(self, device: Accelerator) -> float | None:
        return device.memory_bandwidth_tbs if self.kind == "bandwidth" else device.peak(self.precision)

    def get(self, speeds: AcceleratorSpeeds) -> float | None:
        if self.mode == "train":
            train = speeds.train.get(self.precision)
            return train.mfu if train is not None else None
        serve = speeds.inference.get(self.precision)
        if serve is None:
            return None
        return serve.bandwidth_efficiency if self.kind == "bandwidth" else serve.compute_efficiency


_COMPONENTS = tuple(
    _Component(mode, kind, precision)
    for precision in PRECISIONS
    for mode, kinds in (("train", ("mfu",)), ("inference", ("bandwidth", "compute")))
    for kind in kinds
)


def isotonic(
    values: Mapping[str, float], weights: Mapping[str, float], order: Sequence[tuple[str, str]]
) -> tuple[dict[str, float], set[tuple[str, str]]]:
    """The values closest to `values` (least squares weighted by `weights`) with y[a] >= y[b] for every
    (a, b) in `order`, and the pairs whose constraint binds. Hildreth's method: coordinate ascent on the
    dual, exact for a convex quadratic with linear inequalities (a dozen values and a few dozen pairs)."""
    y = dict(values)
    multipliers = dict.fromkeys(order, 0.0)
    for _ in range(20_000):
        largest = 0.0
        for a, b in order:
            inverse = 1.0 / weights[a] + 1.0 / weights[b]
            change = max(-multipliers[(a, b)], (y[b] - y[a]) / inverse)
            if change:
                multipliers[(a, b)] += change
                y[a] += change / weights[a]
                y[b] -= change / weights[b]
                largest = max(largest, abs(change) * inverse)
        if largest < 1e-12:
            break
    return y, {pair for pair, m in multipliers.items() if m > 0}


def consistent(
    speeds: dict[str, AcceleratorSpeeds], catalog: Catalog, evidence: Mapping[str, Mapping[Mode, int]]
) -> dict[str, AcceleratorSpeeds]:
    """Speeds in which no accelerator is slower, at any precision and in either mode, than one it
    dominates (`dominates`), moved as little as the evidence allows: the least squares in log speed
    weighted by each accelerator's own measurements in that mode (`evidence`; a family or global guess
    weighs GUESS_WEIGHT), so an unmeasured accelerator takes a measured one's speed rather than the other
    way round, and two measured ones meet where their measurement counts put them."""
    devices = catalog.accelerators
    names = [n for n in speeds if n in devices]
    values: dict[str, dict[_Component, float]] = {n: {} for n in names}
    moved: dict[str, dict[Mode, set[str]]] = {n: {"train": set(), "inference": set()} for n in names}
    for component in _COMPONENTS:
        logs = {}
        for n in names:
            efficiency, scale = component.get(speeds[n]), component.scale(devices[n])
            if efficiency is not None and scale:
                logs[n] = math.log(efficiency * scale)
        order = [(a, b) for a in logs for b in logs if a != b and dominates(devices[a], devices[b])]
        weights = {n: float(evidence[n][component.mode]) or GUESS_WEIGHT for n in logs}
        adjusted, binding = isotonic(logs, weights, order)
        for n, y in adjusted.items():
            values[n][component] = math.exp(y) / (component.scale(devices[n]) or 1.0)
            if component.precision == "bf16" and abs(y - logs[n]) > 1e-3:
                moved[n][component.mode] |= {b if a == n else a for a, b in binding if n in (a, b)}
    out = dict(speeds)
    for n in names:
        old, v = speeds[n], values[n]
        train = {p: TrainingSpeed(mfu=_rounded(v[_Component("train", "mfu", p)])) for p in old.train}
        inference = {
            p: InferenceSpeed(
                bandwidth_efficiency=_rounded(v[_Component("inference", "bandwidth", p)]),
                compute_efficiency=_rounded(v[_Component("inference", "compute", p)]),
            )
            for p in old.inference
        }
        basis = dict(old.basis)
        for mode, partners in moved[n].items():
            if partners:
                basis[mode] += _moved_note(speeds[n], v, mode, sorted(partners))
        out[n] = AcceleratorSpeeds(train=train, inference=inference, basis=basis)
    return out


def _moved_note(
    old: AcceleratorSpeeds, new: Mapping[_Component, float], mode: Mode, partners: Sequence[str]
) -> str:
    """What consistency changed in one mode's bf16 speeds, and which accelerators it kept in order with."""
    changes = []
    for component in (c for c in _COMPONENTS if c.mode == mode and c.precision == "bf16"):
        before = component.get(old)
        if before is not None:
            ratio = new[component] / before
            if abs(math.log(ratio)) > 1e-3:
                changes.append(f"{component.kind} x{ratio:.2f}")
    return f"; {', '.join(changes)} to keep the order with {' and '.join(partners)}"


def _rounded(x: float) -> float:
    return float(f"{min(x, 1.0):.4g}")


def _speeds_for(
    name: str | None,
    family: str | None,
    device: Accelerator | None,
    fits: Mapping[Mode, tuple[list[float], dict[str, int]]],
    basis: dict[Mode, str],
) -> AcceleratorSpeeds:
    """Efficiencies from the fitted terms: an accelerator (name and family), a family, or all."""

    def term(mode: Mode, prefix: str, precision: SpeedPrecision) -> float:
        theta, index = fits[mode]
        total = theta[index[f"{prefix}:all"]]
        if family is not None:
            total += theta[index[f"{prefix}:f:{family}"]]
        if name is not None:
            total += theta[index[f"{prefix}:a:{group}"]]
        if precision != "bf16":
            total += theta[index[f"{prefix}:p:{precision}"]]
        return math.exp(total)

    group = name  # already the twin
    precisions = [p for p in PRECISIONS if device is None or device.peak(p)]
    return AcceleratorSpeeds(
        train={p: TrainingSpeed(mfu=_rounded(term("train", "t", p))) for p in precisions},
        inference={
            p: InferenceSpeed(
                bandwidth_efficiency=_rounded(term("inference", "b", p)),
                compute_efficiency=_rounded(term("inference", "c", p)),
            )
            for p in precisions
        },
        basis=basis,
    )


def _basis(name: str, family: str, mode: Mode, pts: Sequence[Point], catalog: Catalog) -> str:
    group = twin(name, catalog)
    own = [p for p in pts if p.mode == mode and p.group == group]
    if own:
        names = sorted({p.measurement.accelerator for p in own})
        return f"fit to {len(own)} measurement(s) of {' and '.join(names)}"
    kin = sum(1 for p in pts if p.mode == mode and p.device.family == family)
    if kin:
        return f"no measurement of {name}: the {family} family's fit ({kin} measurement(s))"
    total = sum(1 for p in pts if p.mode == mode)
    return f"no {family} measurement: the fit over all accelerators ({total} measurement(s))"


def _evidence(pts: Sequence[Point], catalog: Catalog) -> dict[str, dict[Mode, int]]:
    """Measurements of each accelerator's own fitted term (its twin group), per mode."""
    return {
        name: {
            mode: sum(1 for p in pts if p.mode == mode and p.group == twin(name, catalog))
            for mode in ("train", "inference")
        }
        for name in catalog.accelerators
    }


def fit(
    catalog: Catalog, pts: Sequence[Point] | None = None, start: Mapping[Mode, Sequence[float]] | None = None
) -> tuple[Calibration, dict[Mode, list[float]]]:
    """The calibration fitted to `pts` (default: all of the catalog's measurements), and the raw terms
    (a warm start for refits)."""
    pts = points(catalog) if pts is None else pts
    fits: dict[Mode, tuple[list[float], dict[str, int]]] = {}
    raw: dict[Mode, list[float]] = {}
    for mode in ("train", "inference"):
        problem = _problem(mode, catalog)
        theta = _fit_mode([p for p in pts if p.mode == mode], problem, (start or {}).get(mode))
        fits[mode], raw[mode] = (theta, problem.index()), theta
    accelerators = {
        name: _speeds_for(
            twin(name, catalog),
            d.family,
            d,
            fits,
            {mode: _basis(name, d.family, mode, pts, catalog) for mode in ("train", "inference")},
        )
        for name, d in catalog.accelerators.items()
    }
    families = sorted({d.family for d in catalog.accelerators.values()})
    pooled = {
        f: _speeds_for(None, f, None, fits, {"train": f"pooled {f}", "inference": f"pooled {f}"})
        for f in families
    }
    pooled["all"] = _speeds_for(None, None, None, fits, {"train": "pooled", "inference": "pooled"})
    calibration = Calibration(
        node_retention=_rounded(math.exp(min(raw["train"][-1], 0.0))),
        replica_retention=_rounded(math.exp(min(raw["inference"][-1], 0.0))),
        accelerators=consistent(accelerators, catalog, _evidence(pts, catalog)),
        pooled=pooled,
        measurements=len(pts),
    )
    return calibration, raw


def to_yaml(calibration: Calibration) -> dict[str, Any]:
    return calibration.model_dump(by_alias=True, mode="json")


# ---------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Row:
    point: Point
    fitted: float
    held_out: float
    """Predicted by the fit to every other measurement."""

    @property
    def error(self) -> float:
        return self.held_out / self.point.measured - 1.0

    @property
    def fit_error(self) -> float:
        return self.fitted / self.point.measured - 1.0


@dataclass(frozen=True, slots=True)
class Inversion:
    faster: Row
    slower: Row
    """Measured: faster > slower; the model says otherwise."""


@dataclass(frozen=True, slots=True)
class Report:
    calibration: Calibration
    rows: tuple[Row, ...]
    inversions: tuple[Inversion, ...]

    def median_error(self, rows: Iterable[Row] | None = None) -> float:
        errors = [abs(r.error) for r in (self.rows if rows is None else rows)]
        return statistics.median(errors) if errors else 0.0


def workload_key(m: Measurement) -> tuple[object, ...]:
    """Measurements of one workload on different accelerators, compared per device (training, static
    batches) or per sequence (decode)."""
    if m.kind == "train":
        return ("train", m.model, m.sequence_length, m.speed_precision)
    if m.kind == "decode":
        prompts = (m.input_length, m.output_length, m.in_flight, m.first_token_included)
        return ("decode", m.model, m.batch, m.context, *prompts, m.speed_precision)
    return ("batch", m.model, m.input_length, m.output_length, m.speed_precision)


def _comparable(row: Row, value: Callable[[Row], float]) -> float:
    m = row.point.measurement
    return value(row) / m.devices if m.kind == "batch" else value(row)


def inversions(rows: Sequence[Row]) -> tuple[Inversion, ...]:
    groups: dict[tuple[object, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(workload_key(row.point.measurement), []).append(row)
    found = []
    for group in groups.values():
        for a, b in combinations(group, 2):
            if a.point.measurement.accelerator == b.point.measurement.accelerator:
                continue
            ma, mb = _comparable(a, lambda r: r.point.measured), _comparable(b, lambda r: r.point.measured)
            if abs(ma / mb - 1.0) < TIE:
                continue
            faster, slower = (a, b) if ma > mb else (b, a)
            if _comparable(faster, lambda r: r.fitted) < _comparable(slower, lambda r: r.fitted):
                found.append(Inversion(faster, slower))
    return tuple(found)


def calibrate(catalog: Catalog) -> Report:
    """Fit to every measurement, predict each one from the fit without it, and check the order of
    accelerators on shared workloads."""
    pts = points(catalog)
    calibration, raw = fit(catalog, pts)
    rows = []
    for i, point in enumerate(pts):
        others = [p for j, p in enumerate(pts) if j != i]
        without, _ = fit(catalog, others, start=raw)
        rows.append(Row(point, predict_calibrated(point, calibration), predict_calibrated(point, without)))
    return Report(calibration, tuple(rows), inversions(rows))
