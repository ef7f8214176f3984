"""The speed model's arithmetic (planning/speed.py) and how the planner prices with it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_operator.api import AcceleratorPoolSpec, LlamaJobSpec
from llama_operator.catalog import InferenceSpeed, TrainingSpeed, builtin
from llama_operator.planning import resolve_pool, speed
from llama_operator.planning.estimate import rates_for
from llama_operator.planning.workload import workload_of

pytestmark = pytest.mark.unit

CATALOG = builtin()
H100 = CATALOG.accelerators["h100"]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_training_tokens_per_device_is_peak_times_mfu_over_flops() -> None:
    rate = speed.training_tokens_per_device(6e10, H100, "bf16", TrainingSpeed(mfu=0.5))
    assert rate == pytest.approx(989e12 * 0.5 / 6e10)
    fp32 = speed.training_tokens_per_device(6e10, H100, "fp32", TrainingSpeed(mfu=0.5))
    assert fp32 == pytest.approx(rate * 67 / 989)
    recompute = speed.training_tokens_per_device(
        6e10, H100, "bf16", TrainingSpeed(mfu=0.5), activation_checkpointing=True
    )
    assert recompute == pytest.approx(rate * 0.75)


def test_node_scaling_and_the_fewest_nodes_for_a_rate() -> None:
    assert speed.node_scale(1, 0.9, efa=True, no_efa=0.7) == 1.0
    assert speed.node_scale(4, 0.9, efa=True, no_efa=0.7) == pytest.approx(0.81)
    assert speed.node_scale(2, 1.0, efa=False, no_efa=0.7) == pytest.approx(0.7)

    def scale(n: int) -> float:
        return speed.node_scale(n, 0.9, efa=True, no_efa=0.7)

    n = speed.nodes_for(1000.0, 100.0, scale)
    assert n * 100 * scale(n) >= 1000 and (n - 1) * 100 * scale(n - 1) < 1000
    assert speed.nodes_for(50.0, 100.0, scale) == 1


@given(batch=st.integers(1, 512), devices=st.sampled_from([1, 2, 4, 8]))
def test_a_decode_step_is_memory_bound_at_small_batches_and_never_faster_with_more_work(
    batch: int, devices: int
) -> None:
    arch = speed.Arch(8e9, 32, 4096, 1024)
    eff = InferenceSpeed(bandwidth_efficiency=0.7, compute_efficiency=0.4)

    def step(b: int) -> speed.Step:
        return speed.decode_step(
            bytes_read=arch.weight_bytes("bf16") + b * 2048 * arch.kv_bytes_per_token("bf16"),
            flops=b * arch.decode_flops_per_token(2048),
            devices=devices,
            device=H100,
            precision="bf16",
            speed=eff,
            replica_retention=1.0,
        )

    assert step(1).memory_bound
    assert step(batch + 1).seconds >= step(batch).seconds
    # Bandwidth-bound: the step time is bytes over effective bandwidth.
    one = step(1)
    assert one.seconds == pytest.approx((arch.weight_bytes("bf16") + 2048 * arch.kv_bytes_per_token("bf16"))
                                        / (devices * 3.35e12 * 0.7))  # fmt: skip


def test_the_planner_prices_with_the_calibration() -> None:
    spec = LlamaJobSpec.model_validate(
        {"mode": "train", "model": {"preset": "llama3-8b"}, "training": {"steps": 10, "precision": "bf16"}}
    )
    work = workload_of(spec, NOW)
    pool = resolve_pool(AcceleratorPoolSpec(node_selector={"a": "b"}, instance_type="p5.48xlarge"), CATALOG)
    assert CATALOG.calibration is not None
    rates = rates_for(work, pool, CATALOG.calibration)
    mfu = CATALOG.calibration.accelerators["h100"].train["bf16"].mfu
    assert rates.tokens_per_device == pytest.approx(989e12 * mfu / work.flops_per_token)
    assert rates_for(work, pool, CATALOG.calibration, factor=0.5).tokens_per_device == pytest.approx(
        rates.tokens_per_device * 0.5
    )
