"""Model arithmetic (parameters, FLOPs, memory) and pool resolution."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llama_operator.api import AcceleratorPoolSpec, LlamaJobSpec, ModelSpec
from llama_operator.api.types import Precision
from llama_operator.catalog import builtin
from llama_operator.planning import PoolError, llama, resolve_pool, shape_of
from llama_runtime.capabilities import CAPABILITIES, Serving, Training

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("preset", "billions"),
    [("llama3-1b", 1.236), ("llama3-3b", 3.213), ("llama3-8b", 8.030), ("llama3-70b", 70.554)],
)
def test_parameter_counts_match_the_published_models(preset: str, billions: float) -> None:
    assert shape_of(ModelSpec(preset=preset)).parameters / 1e9 == pytest.approx(billions, abs=0.002)


def test_tiny_is_tiny_and_explicit_dimensions_count_the_same_way() -> None:
    tiny = shape_of(ModelSpec(preset="tiny"))
    assert tiny.parameters < 5_000_000
    custom = ModelSpec.model_validate(
        {
            "dimensions": {
                "hiddenSize": 4096,
                "intermediateSize": 14336,
                "numLayers": 32,
                "numHeads": 32,
                "numKvHeads": 8,
                "vocabSize": 128256,
            }
        }
    )
    assert shape_of(custom).parameters == shape_of(ModelSpec(preset="llama3-8b")).parameters
    assert shape_of(custom).label == "custom"


def test_training_memory_shrinks_with_checkpointing_and_grows_with_the_batch() -> None:
    shape = shape_of(ModelSpec(preset="llama3-8b"))
    row = CAPABILITIES["cuda"].training
    assert row is not None

    def rank(ac: bool, micro: int = 1, seq: int = 2048) -> llama.TrainingMemory:
        return llama.training_memory(
            shape, row, micro_batch=micro, sequence_length=seq, precision="bf16", activation_checkpointing=ac
        )

    assert rank(True).fixed < rank(False).fixed < rank(False, micro=2).fixed
    assert rank(False).sharded == 16 * shape.parameters and rank(False).replicated == 0
    # Chunked cross-entropy: the loss holds LOSS_CHUNK positions of logits, however long the sequence.
    assert (
        rank(True, seq=8192).logits == rank(True, seq=2048).logits == 1024 * shape.vocab * llama.LOGIT_BYTES
    )
    assert rank(True).scores == 0  # cuda: sdpa keeps no seq x seq scores


def test_training_memory_follows_the_rows_sharding_attention_and_precision() -> None:
    shape = shape_of(ModelSpec(preset="llama3-1b"))
    base = CAPABILITIES["cuda"].training
    assert base is not None

    def mem(row: Training, precision: Precision = "bf16") -> llama.TrainingMemory:
        return llama.training_memory(
            shape,
            row,
            micro_batch=1,
            sequence_length=2048,
            precision=precision,
            activation_checkpointing=True,
        )

    state = 16 * shape.parameters
    assert (
        mem(replace(base, sharding="replicated")).sharded,
        mem(replace(base, sharding="replicated")).replicated,
    ) == (0, state)
    zero1 = mem(replace(base, sharding="optimizer"))
    assert (zero1.sharded, zero1.replicated) == (8 * shape.parameters, 8 * shape.parameters)
    # Materialised scores (fp32 softmax + its bf16 copy) of the one layer recomputed at a time.
    eager = mem(replace(base, attention="materialized"))
    assert eager.scores == llama.RECOMPUTE_FACTOR * shape.heads * 2048**2 * (4 + 2)
    assert eager.recompute - eager.scores == pytest.approx(mem(base).recompute)
    assert eager.activations == mem(base).activations
    unchunked = mem(replace(base, chunked_loss=False))
    assert unchunked.logits == 2 * mem(base).logits  # 2048 positions instead of 1024
    # A line that computes in fp32 whatever the job asks (cpu) is sized in fp32.
    cpu = CAPABILITIES["cpu"].training
    assert cpu is not None
    assert (
        mem(cpu, "bf16").activations
        == mem(replace(base, computes_in="fp32")).activations
        > mem(base).activations
    )


def test_inference_memory_pads_and_replicates_heads_as_the_engine_does() -> None:
    shape = shape_of(ModelSpec(preset="llama3-70b"))  # 64 heads, 8 KV heads
    nxd, vllm = CAPABILITIES["neuron-xla"].serving, CAPABILITIES["cuda"].serving
    assert nxd is not None and vllm is not None

    def per_rank(row: Serving, degree: int) -> tuple[float, float] | None:
        return llama.inference_rank_bytes(shape, row, degree, max_batch=16, context_length=4096)

    weights, kv = llama.inference_replica_bytes(shape, max_batch=16, context_length=4096)
    assert per_rank(vllm, 8) == pytest.approx((weights / 8, kv / 8))  # 8 | 64 and 8 | 8: no padding
    assert per_rank(vllm, 16) is not None and per_rank(vllm, 16)[1] == pytest.approx(kv / 8)  # KV replicated
    assert per_rank(vllm, 12) is None  # 12 does not divide 64 heads
    # NxD Inference pads 64 heads to 72 at degree 12 and (12 is no multiple of 8) converts to MHA.
    w12, kv12 = per_rank(nxd, 12) or (0.0, 0.0)
    assert kv12 == pytest.approx(kv * 72 / 8 / 12)
    assert w12 > weights / 12
    # At 24 it replicates the 8 KV heads to 24 (one per rank) and pads queries to 72.
    assert (per_rank(nxd, 24) or (0.0, 0.0))[1] == pytest.approx(kv * 24 / 8 / 24)


def test_flops_per_token() -> None:
    shape = shape_of(ModelSpec(preset="llama3-8b"))
    assert llama.training_flops_per_token(shape, 2048) == pytest.approx(6 * shape.parameters, rel=0.1)
    weights, kv = llama.inference_replica_bytes(shape, max_batch=8, context_length=4096)
    assert weights == 2 * shape.parameters
    assert kv == 2 * 32 * 1024 * 4096 * 8 * 2


def _pool(**fields: object) -> AcceleratorPoolSpec:
    return AcceleratorPoolSpec.model_validate({"nodeSelector": {"llamaop.io/pool": "p"}, **fields})


def test_pool_defaults_come_from_the_catalog() -> None:
    kind = resolve_pool(_pool(instanceType="trn1.32xlarge"), builtin())
    assert (kind.family, kind.accelerator, kind.devices_per_node) == ("neuron", "trainium1", 16)
    assert kind.allowed_device_counts == (1, 4, 8, 16)
    assert kind.resource_name == "aws.amazon.com/neuron"
    assert kind.backend == "neuron"
    # Training on the XLA line: one SPMD process per pod over 32 NeuronCores; NxD Inference: one per core.
    assert (kind.processes_per_pod(16), kind.shard_holders(16)) == (1, 32)
    assert (kind.processes_per_pod(16, "inference"), kind.tensor_parallel(16)) == (32, 32)
    assert kind.efa_per_node == 8
    assert kind.price_per_node_hour == 21.50


def test_pool_overrides_and_spot_pricing() -> None:
    cat = builtin()
    spot = resolve_pool(_pool(instanceType="p5.48xlarge", capacityType="spot"), cat)
    assert spot.price_per_node_hour == pytest.approx(55.04 * cat.defaults.spot_price_factor)
    own = resolve_pool(_pool(instanceType="p5.48xlarge", pricePerNodeHour=30, allowedDeviceCounts=[8]), cat)
    assert (own.price_per_node_hour, own.allowed_device_counts) == (30, (8,))
    cpu = resolve_pool(_pool(instanceType="m7i.8xlarge"), cat)
    assert (cpu.resource_name, cpu.processes_per_pod(4), cpu.vcpus_per_device) == (None, 1, 8)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"instanceType": "trn2.48xlarge", "capacityType": "reserved"}, "pricePerNodeHour"),
        ({"instanceType": "x9.huge"}, "not in the catalog"),
        ({"instanceType": "p5.48xlarge", "family": "neuron"}, "does not match"),
        (
            {"family": "nvidia", "acceleratorModel": "b200", "devicesPerNode": 8, "pricePerNodeHour": 1},
            "not in the catalog",
        ),
    ],
)
def test_unusable_pools_say_why(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(PoolError, match=fragment):
        resolve_pool(_pool(**fields), builtin())


def test_spec_helpers() -> None:
    spec = LlamaJobSpec.model_validate(
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {"tokens": 10_000, "batchSize": 4, "sequenceLength": 256},
        }
    )
    assert spec.training is not None
    assert spec.training.total_steps() == 10  # ceil(10000 / 1024)
