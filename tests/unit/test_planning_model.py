"""Model arithmetic (parameters, FLOPs, memory) and pool resolution."""

from __future__ import annotations

import pytest

from llama_operator.api import AcceleratorPoolSpec, LlamaJobSpec, ModelSpec
from llama_operator.catalog import builtin
from llama_operator.planning import PoolError, llama, resolve_pool, shape_of

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

    def rank(ac: bool, micro: int = 1) -> float:
        return llama.training_rank_bytes(
            shape, micro_batch=micro, sequence_length=2048, precision="bf16", activation_checkpointing=ac
        )

    assert rank(True) < rank(False) < rank(False, micro=2)
    assert llama.training_state_bytes(shape) == 16 * shape.parameters


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
    assert kind.processes_per_pod(16) == 32
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
