"""The published measurements, the fit to them and its checks (planning/calibration.py)."""

from __future__ import annotations

import math
from itertools import product

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_operator.catalog import (
    Accelerator,
    AcceleratorSpeeds,
    InferenceSpeed,
    Measurement,
    TrainingSpeed,
    builtin,
)
from llama_operator.planning import calibration
from llama_operator.planning.speed import Arch, decode_step, inference_speed, training_speed

pytestmark = pytest.mark.unit

CATALOG = builtin()
assert CATALOG.calibration is not None and CATALOG.measurements is not None
SHIPPED = CATALOG.calibration
MEASUREMENTS = CATALOG.measurements


@pytest.fixture(scope="module")
def report() -> calibration.Report:
    return calibration.calibrate(CATALOG)


def test_every_measurement_says_where_it_comes_from_and_what_it_ran_on() -> None:
    assert len(MEASUREMENTS.measurements) >= 40
    for m in MEASUREMENTS.measurements:
        source = MEASUREMENTS.sources[m.source]
        assert source.title and source.url, m.id
        assert m.devices > 0 and m.figure.value > 0 and m.framework, m.id
    kinds = {(m.accelerator, m.mode) for m in MEASUREMENTS.measurements}
    # The sources the issue asks for: Neuron (trn1 training, trn1/inf2 inference), H100/H200 (NVIDIA).
    assert {("trainium1", "train"), ("trainium1", "inference"), ("inferentia2", "inference")} <= kinds
    assert {("h100", "train"), ("h100", "inference"), ("h200", "inference")} <= kinds
    precisions = {m.precision for m in MEASUREMENTS.measurements if m.accelerator == "h100"}
    assert {"bf16", "fp8"} <= precisions


def test_published_figures_become_the_fitted_quantity() -> None:
    by_id = {m.id: m for m in MEASUREMENTS.measurements}
    trn1 = by_id["trn1-llama31-8b-nxd"]  # 47.95 seq/s of 8192 tokens on 32 x 16 devices
    assert trn1.value() == pytest.approx(47.95 * 8192 / 512)
    assert by_id["h100-llama31-8b-nemo-bf16"].value() == pytest.approx(85459 / 8)
    assert by_id["inf2-llama3-70b-tgi-b1"].value() == pytest.approx(1000 / 31.61)
    assert by_id["h100-llama2-70b-trtllm-128-2048"].value() == pytest.approx(1486 * 4)
    assert by_id["a100-llama2-7b-trtllm-128-2048"].speed_precision == "bf16"  # fp16: fitted as bf16


def test_the_shipped_calibration_is_the_fit_of_the_shipped_measurements() -> None:
    refit, _ = calibration.fit(CATALOG)
    assert refit.measurements == SHIPPED.measurements == len(MEASUREMENTS.measurements)
    assert refit.node_retention == pytest.approx(SHIPPED.node_retention, rel=1e-3)
    assert refit.replica_retention == pytest.approx(SHIPPED.replica_retention, rel=1e-3)
    assert set(refit.accelerators) == set(SHIPPED.accelerators) == set(CATALOG.accelerators)
    for name, speeds in refit.accelerators.items():
        shipped = SHIPPED.accelerators[name]
        for p, s in speeds.train.items():
            assert s.mfu == pytest.approx(shipped.train[p].mfu, rel=1e-3), (name, p)
        for p, s in speeds.inference.items():
            assert s.bandwidth_efficiency == pytest.approx(
                shipped.inference[p].bandwidth_efficiency, rel=1e-3
            )
            assert s.compute_efficiency == pytest.approx(shipped.inference[p].compute_efficiency, rel=1e-3)


def test_held_out_error_meets_the_bar_and_no_accelerators_swap_places(report: calibration.Report) -> None:
    assert len(report.rows) == len(MEASUREMENTS.measurements)
    assert report.median_error() <= 0.25
    assert report.median_error([r for r in report.rows if r.point.mode == "train"]) <= 0.25
    assert report.median_error([r for r in report.rows if r.point.mode == "inference"]) <= 0.25
    assert report.inversions == ()
    # Held out really means held out: a measurement alone on its accelerator loses its own fit.
    cpu = next(r for r in report.rows if r.point.measurement.accelerator == "xeon-8vcpu")
    assert abs(cpu.fit_error) < abs(cpu.error)


def test_the_fit_beats_the_uncalibrated_model_it_replaced(report: calibration.Report) -> None:
    """main's catalog priced training at a fixed 30-45% MFU: judged against the same measurements."""
    old_mfu = {"trainium1": 0.30, "h100": 0.45, "a100-80gb": 0.45, "a100-40gb": 0.45}
    old_errors, new_errors = [], []
    for r in report.rows:
        m = r.point.measurement
        if m.mode != "train" or m.accelerator not in old_mfu or m.speed_precision != "bf16":
            continue
        assert m.sequence_length is not None
        old = r.point.device.peak_tflops * 1e12 * old_mfu[m.accelerator]
        old /= r.point.arch.training_flops_per_token(m.sequence_length)
        old *= (0.75 if m.activation_checkpointing else 1.0) * (0.92 if m.nodes > 1 else 1.0)
        old_errors.append(abs(old / r.point.measured - 1))
        new_errors.append(abs(r.error))
    assert sorted(new_errors)[len(new_errors) // 2] < sorted(old_errors)[len(old_errors) // 2]


def test_an_inversion_is_found_when_the_model_orders_accelerators_wrongly(report: calibration.Report) -> None:
    rows = [
        r for r in report.rows if calibration.workload_key(r.point.measurement)[:2] == ("train", "llama3-8b")
    ]
    accelerators = {r.point.measurement.accelerator for r in rows}
    assert {"trainium1", "h100"} <= accelerators
    swapped = [calibration.Row(r.point, 1.0 / r.fitted, r.held_out) for r in rows]
    assert calibration.inversions(swapped)


# ---------------------------------------------------------------- consistency

ARCHS = st.builds(
    Arch,
    parameters=st.floats(1e8, 1e11),
    layers=st.integers(2, 96),
    hidden=st.sampled_from([1024, 2048, 4096, 8192]),
    kv_width=st.sampled_from([256, 1024, 4096]),
)
PAIRS = [
    (a, b)
    for a, b in product(CATALOG.accelerators, repeat=2)
    if a != b and calibration.dominates(CATALOG.accelerators[a], CATALOG.accelerators[b])
]


def test_the_catalog_has_dominance_pairs_to_check() -> None:
    assert (
        ("h200", "h100") in PAIRS
        and ("a100-80gb", "a100-40gb") in PAIRS
        and ("trainium2", "trainium1") in PAIRS
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arch=ARCHS,
    seq=st.integers(128, 16384),
    precision=st.sampled_from(["bf16", "fp32"]),
    batch=st.integers(1, 256),
    context=st.integers(16, 8192),
    devices=st.sampled_from([1, 2, 4, 8]),
)
def test_an_accelerator_with_at_least_anothers_specs_is_never_estimated_slower(
    arch: Arch, seq: int, precision: str, batch: int, context: int, devices: int
) -> None:
    def train(name: str) -> float:
        d: Accelerator = CATALOG.accelerators[name]
        peak = d.peak(precision) or d.peak_tflops  # type: ignore[arg-type]
        return peak * training_speed(SHIPPED, name, d, precision).mfu / arch.training_flops_per_token(seq)  # type: ignore[arg-type]

    def serve(name: str) -> float:
        d = CATALOG.accelerators[name]
        step = decode_step(
            bytes_read=arch.weight_bytes("bf16") + batch * context * arch.kv_bytes_per_token("bf16"),
            flops=batch * arch.decode_flops_per_token(context),
            devices=devices,
            device=d,
            precision="bf16",
            speed=inference_speed(SHIPPED, name, d, "bf16"),
            replica_retention=SHIPPED.replica_retention,
        )
        return 1.0 / step.seconds

    for a, b in PAIRS:
        assert train(a) >= train(b) * (1 - 1e-3), (a, b)
        assert serve(a) >= serve(b) * (1 - 1e-3), (a, b)


def test_a_fit_transfers_across_model_sizes_by_flops() -> None:
    """One efficiency per accelerator: 8B and 70B speeds differ exactly by their FLOPs per token."""
    d = CATALOG.accelerators["trainium1"]
    mfu = training_speed(SHIPPED, "trainium1", d, "bf16").mfu
    small = calibration.arch_of("llama3-8b", CATALOG)
    big = calibration.arch_of("llama3-70b", CATALOG)
    ratio = big.training_flops_per_token(4096) / small.training_flops_per_token(4096)
    speed_small = d.peak_tflops * 1e12 * mfu / small.training_flops_per_token(4096)
    speed_big = d.peak_tflops * 1e12 * mfu / big.training_flops_per_token(4096)
    assert speed_small / speed_big == pytest.approx(ratio)
    assert math.isclose(ratio, 8.6, rel_tol=0.05)


def test_fp8_figures_fit_fp8_efficiencies_and_bf16_jobs_use_the_bf16_peak() -> None:
    h100 = CATALOG.accelerators["h100"]
    bf16, fp8 = SHIPPED.accelerators["h100"].train["bf16"], SHIPPED.accelerators["h100"].train["fp8"]
    assert bf16 != fp8
    assert training_speed(SHIPPED, "h100", h100, "bf16") == bf16
    # The conversion where an accelerator has no fit at a precision: its bf16 efficiency at that peak.
    assert "fp8" not in SHIPPED.accelerators["a100-80gb"].train
    assert training_speed(SHIPPED, "a100-80gb", CATALOG.accelerators["a100-80gb"], "fp8").mfu == (
        SHIPPED.accelerators["a100-80gb"].train["bf16"].mfu
    )
    assert h100.peak("bf16") == 989 and h100.peak("fp8") == 1979


def test_an_accelerator_without_measurements_gets_its_familys_fit_and_says_so() -> None:
    h200 = SHIPPED.accelerators["h200"]
    assert "no measurement of h200" in h200.basis["train"]
    assert "fit to" in SHIPPED.accelerators["h100"].basis["train"]
    assert SHIPPED.speeds("not-in-catalog", "nvidia") == SHIPPED.pooled["nvidia"]
    assert SHIPPED.speeds("not-in-catalog", "tpu") == SHIPPED.pooled["all"]


# ---------------------------------------------------------------- consistency by evidence


def test_isotonic_moves_the_lighter_value_and_meets_in_the_weighted_middle() -> None:
    # b must not exceed a; they meet at the weighted mean of their logs.
    y, binding = calibration.isotonic({"a": 0.0, "b": 1.0}, {"a": 3.0, "b": 1.0}, [("a", "b")])
    assert y["a"] == pytest.approx(0.25) and y["b"] == pytest.approx(0.25)
    assert binding == {("a", "b")}
    # A guess (weight ~0) takes the measured value; a measured one barely moves.
    y, _ = calibration.isotonic({"a": 0.0, "b": 1.0}, {"a": 5.0, "b": 1e-6}, [("a", "b")])
    assert y["b"] == pytest.approx(0.0, abs=1e-6) and y["a"] == pytest.approx(0.0, abs=1e-6)
    # A chain a >= b >= c with c too high pulls b down with it only as far as needed.
    y, _ = calibration.isotonic(
        {"a": 2.0, "b": 1.0, "c": 1.6}, dict.fromkeys("abc", 1.0), [("a", "b"), ("b", "c")]
    )
    assert y["a"] == pytest.approx(2.0) and y["b"] == pytest.approx(1.3) and y["c"] == pytest.approx(1.3)
    # Nothing to do when the order already holds.
    y, binding = calibration.isotonic({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 1.0}, [("a", "b")])
    assert y == {"a": 1.0, "b": 0.0} and binding == set()


def _speeds(mfu: float, bandwidth: float, compute: float, note: str) -> AcceleratorSpeeds:
    return AcceleratorSpeeds(
        train={"bf16": TrainingSpeed(mfu=mfu)},
        inference={"bf16": InferenceSpeed(bandwidth_efficiency=bandwidth, compute_efficiency=compute)},
        basis={"train": note, "inference": note},
    )


def test_an_unmeasured_accelerator_is_lowered_to_the_measured_one_that_dominates_it() -> None:
    """trainium1 has at least an A10G's FLOP/s, bandwidth and memory. When the measured trainium1 serves
    slower than the A10G's family guess, the guess comes down; trainium1 keeps what it measured."""
    devices = CATALOG.accelerators
    assert calibration.dominates(devices["trainium1"], devices["a10g"])
    speeds = {
        "trainium1": _speeds(0.3, 0.3, 0.05, "measured"),
        "a10g": _speeds(0.5, 0.7, 0.35, "guess"),
    }
    evidence = {"trainium1": {"train": 5, "inference": 6}, "a10g": {"train": 0, "inference": 0}}
    out = calibration.consistent(speeds, CATALOG, evidence)
    assert out["trainium1"].inference["bf16"] == speeds["trainium1"].inference["bf16"]
    a10g = out["a10g"].inference["bf16"]
    trn1 = out["trainium1"].inference["bf16"]
    bw = devices["trainium1"].memory_bandwidth_tbs / devices["a10g"].memory_bandwidth_tbs
    peak = devices["trainium1"].peak_tflops / devices["a10g"].peak_tflops
    assert a10g.bandwidth_efficiency == pytest.approx(trn1.bandwidth_efficiency * bw, rel=1e-3)
    assert a10g.compute_efficiency == pytest.approx(trn1.compute_efficiency * peak, rel=1e-3)
    assert "to keep the order with trainium1" in out["a10g"].basis["inference"]
    assert out["trainium1"].basis == speeds["trainium1"].basis
    # Training was in order (0.3 x 190 >= 0.5 x 70): nothing moves.
    assert out["a10g"].train == speeds["a10g"].train


def test_two_measured_accelerators_meet_as_their_measurement_counts_weigh_them() -> None:
    devices = CATALOG.accelerators
    assert calibration.dominates(devices["trainium2"], devices["a100-80gb"])
    speeds = {"trainium2": _speeds(0.3, 0.3, 0.3, "t"), "a100-80gb": _speeds(0.6, 0.8, 0.5, "a")}
    evidence = {"trainium2": {"train": 0, "inference": 2}, "a100-80gb": {"train": 7, "inference": 6}}
    out = calibration.consistent(speeds, CATALOG, evidence)
    before_t, before_a = speeds["trainium2"].inference["bf16"], speeds["a100-80gb"].inference["bf16"]
    after_t, after_a = out["trainium2"].inference["bf16"], out["a100-80gb"].inference["bf16"]
    gap = math.log(before_a.bandwidth_efficiency * 2.0 / (before_t.bandwidth_efficiency * 2.9))
    assert gap > 0  # trainium2 was estimated slower than what it dominates
    # 2 against 6 measurements: trainium2 moves 3/4 of the gap, the A100 a quarter.
    assert math.log(after_t.bandwidth_efficiency / before_t.bandwidth_efficiency) == pytest.approx(
        0.75 * gap, rel=1e-3
    )
    assert math.log(before_a.bandwidth_efficiency / after_a.bandwidth_efficiency) == pytest.approx(
        0.25 * gap, rel=1e-3
    )
    assert after_t.bandwidth_efficiency * 2.9 == pytest.approx(after_a.bandwidth_efficiency * 2.0, rel=1e-3)


def test_the_shipped_fit_never_moves_evidence_towards_a_guess() -> None:
    """Every consistency note on a measured accelerator names only measured partners: a guess never
    pulls a measured estimate."""
    measured = {
        (name, mode)
        for name, s in SHIPPED.accelerators.items()
        for mode in ("train", "inference")
        if s.basis[mode].startswith("fit to")
    }
    notes = 0
    for name, s in SHIPPED.accelerators.items():
        for mode in ("train", "inference"):
            text = s.basis[mode]
            if "to keep the order with" not in text or (name, mode) not in measured:
                continue
            notes += 1
            partners = text.split("to keep the order with ")[1].split(" and ")
            assert all((p, mode) in measured for p in partners), (name, mode, text)
    # The data have such pairs (trainium2 and the A100 80GB in serving) and unmeasured ones that move.
    assert notes >= 1
    assert "to keep the order with" in SHIPPED.accelerators["a10g"].basis["inference"]
    assert "to keep the order" not in SHIPPED.accelerators["trainium1"].basis["inference"]


# ---------------------------------------------------------------- what a decode row describes

ROW = {
    "id": "x", "source": "s", "accelerator": "inferentia2", "mode": "inference", "model": "llama3-70b",
    "precision": "bf16", "devices": 12, "framework": "f", "figure": {"value": 50.0, "unit": "ms/token"},
    "batch": 8, "context": 2048, "inputLength": 1500, "outputLength": 250,
}  # fmt: skip


def _predict(**fields: object) -> float:
    m = Measurement.model_validate({**ROW, **fields})
    device = CATALOG.accelerators[m.accelerator]
    return calibration.predict(
        m,
        calibration.arch_of(m.model, CATALOG),
        device,
        None,
        inference_speed(SHIPPED, m.accelerator, device, "bf16"),
        SHIPPED.node_retention,
        SHIPPED.replica_retention,
    )


def test_a_decode_row_carries_the_prompts_of_the_requests_in_flight() -> None:
    """ms/token of a continuous-batching server: the decode step plus, per generated token, the prompts
    computed in between: the other requests in flight, and with llmperf's definition its own."""
    alone = 1.0 / _predict(concurrency=1)
    full = 1.0 / _predict()  # concurrency defaults to the batch: 7 other prompts
    llmperf = 1.0 / _predict(firstTokenIncluded=True)  # and this request's own
    prompt = (full - alone) / 7
    assert prompt > 0
    assert llmperf - full == pytest.approx(prompt, rel=1e-6)
    assert 1.0 / _predict(concurrency=1, firstTokenIncluded=True) - alone == pytest.approx(prompt, rel=1e-6)
    # The step itself is the compiled batch's, however few requests are live.
    no_prompts = dict(ROW)
    del no_prompts["inputLength"], no_prompts["outputLength"]
    m = Measurement.model_validate(no_prompts)
    assert m.in_flight == 8
    assert 1.0 / _predict(inputLength=None, outputLength=None) == pytest.approx(alone, rel=1e-6)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"concurrency": 9}, "concurrency above the batch"),
        ({"inputLength": None, "concurrency": 2}, "need inputLength and outputLength"),
        ({"outputLength": None, "firstTokenIncluded": True}, "need inputLength and outputLength"),
    ],
)
def test_a_decode_row_that_cannot_mean_anything_is_refused(fields: dict[str, object], message: str) -> None:
    row = {k: v for k, v in {**ROW, **fields}.items() if v is not None}
    m = Measurement.model_validate(row)
    assert m.check() is not None and message in (m.check() or "")
