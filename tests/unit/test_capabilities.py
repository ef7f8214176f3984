"""The capability contract: the backends do what their row says, and the planner offers only what the
rows allow, sized as the rows shard. (What a run really holds is tests/runtime/test_memory.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from llama_operator.api import AcceleratorPoolSpec, LlamaJobSpec
from llama_operator.api.types import Mode
from llama_operator.catalog import builtin
from llama_operator.planning import PoolType, llama, options, resolve_pool, workload_of
from llama_operator.planning.estimate import Stage, rates_for
from llama_operator.planning.llama import GIB
from llama_runtime import capabilities
from llama_runtime.backends import backend_class
from llama_runtime.capabilities import CAPABILITIES, Line, shardable_heads, tensor_parallel_fits

pytestmark = pytest.mark.unit

CATALOG = builtin()
LINES: tuple[Line, ...] = ("cpu", "cuda", "neuron-xla", "neuron-native")


@pytest.mark.parametrize("line", LINES)
def test_each_backend_does_what_its_row_says(line: Line) -> None:
    cls, row = backend_class(line), CAPABILITIES[line]
    assert cls.line == line
    assert row.training is not None and row.serving is not None
    assert (cls.sharding, cls.shard_unit) == (row.training.sharding, row.training.shard_unit)
    # Eager attention keeps the scores; sdpa may be counted as materialised (unverified kernels), never
    # the other way round.
    if cls.attention == "eager":
        assert row.training.attention == "materialized"
    # A line that ignores the job's precision trains in its backend's default.
    if row.training.computes_in is not None:
        assert row.training.computes_in == cls.default_precision
    # The runtime's own engine serves in the backend's default (the operator sets no precision to serve).
    if row.serving.engine == "llama-runtime":
        assert row.serving.precision == cls.default_precision


def test_the_xla_line_is_one_spmd_process_per_pod_sharding_over_its_devices() -> None:
    row = CAPABILITIES["neuron-xla"].training
    assert row is not None
    assert (row.processes, row.shard_unit, row.max_nodes) == ("per-pod", "xla-device", 1)
    assert capabilities.processes_per_pod(row.processes, 16, 2) == 1
    assert capabilities.shard_holders_per_pod(row, 16, 2) == 32
    native = CAPABILITIES["neuron-native"].training
    assert native is not None and capabilities.shard_holders_per_pod(native, 16, 4) == 64


def test_which_line_and_mode_each_accelerator_gets() -> None:
    assert capabilities.line_for("neuron", "trainium1") == "neuron-xla"
    assert capabilities.line_for("neuron", "trainium2") == "neuron-native"
    assert capabilities.line_for("nvidia", "h100") == "cuda"
    assert capabilities.refusal("neuron", "inferentia2", "train") == (
        "inferentia2 does not train (neuron-xla serves only there)"
    )
    assert capabilities.refusal("neuron", "inferentia2", "inference") is None
    assert capabilities.refusal("nvidia", "h100", "inference", "fp32") == "vllm does not serve in fp32"
    assert capabilities.refusal("cpu", "xeon-8vcpu", "train", "bf16") is None


def test_head_padding_follows_nxd_inference() -> None:
    # neuronx-distributed-inference modules/attention/gqa.py get_shardable_head_counts: queries padded to
    # a multiple of the degree; KV heads replicated to the degree when it is their multiple, else MHA.
    nxd = CAPABILITIES["neuron-xla"].serving
    assert nxd is not None and nxd.pads_heads
    assert shardable_heads(nxd, 32, 56, 8) == (64, 32)
    assert shardable_heads(nxd, 12, 64, 8) == (72, 72)
    assert shardable_heads(nxd, 8, 64, 8) == (64, 8)
    assert shardable_heads(nxd, 4, 32, 32) == (32, 32)
    vllm = CAPABILITIES["cuda"].serving
    assert vllm is not None
    assert shardable_heads(vllm, 16, 64, 8) == (64, 16)  # one KV head per rank
    assert not tensor_parallel_fits(vllm, 6, 64, 8)
    assert not tensor_parallel_fits(vllm, 4, 64, 8, intermediate=14330)
    runtime = CAPABILITIES["cpu"].serving  # the runtime's own engine replicates KV heads like vLLM
    assert runtime is not None and shardable_heads(runtime, 16, 64, 8) == (64, 16)
    assert not tensor_parallel_fits(runtime, 6, 64, 8)


def _pools() -> list[tuple[str, PoolType]]:
    return [
        (
            name,
            resolve_pool(
                AcceleratorPoolSpec.model_validate({"nodeSelector": {"p": name}, "instanceType": name}),
                CATALOG,
            ),
        )
        for name, itype in CATALOG.instance_types.items()
        if itype.price is not None
    ]


def _spec(mode: str, preset: str, **extra: object) -> LlamaJobSpec:
    if mode == "train":
        return LlamaJobSpec.model_validate(
            {
                "mode": "train",
                "model": {"preset": preset},
                "training": {"steps": 10, "batchSize": 64, **extra},
            }
        )
    return LlamaJobSpec.model_validate(
        {"mode": "inference", "model": {"preset": preset}, "inference": {"replicas": 1, **extra}}
    )


@pytest.mark.parametrize("mode", ["train", "inference"])
def test_the_planner_offers_nothing_the_runtime_cannot_run(mode: Mode) -> None:
    offered = 0
    for preset in ("tiny", "llama3-1b", "llama3-8b", "llama3-70b"):
        work = workload_of(_spec(mode, preset))
        shape = work.shape
        for name, pool in _pools():
            rates = rates_for(work, pool, CATALOG.calibration)
            found = options(work, pool, CATALOG.defaults, node_limit=64, rates=rates, hours_left=None)
            cap = pool.capability
            for option in found:
                # Processes per pod are the row's, never the device count by habit.
                assert option.processes_per_pod == pool.processes_per_pod(option.devices_per_node, mode)
                if not option.fits:
                    continue
                offered += 1
                assert pool.refusal(mode) is None, (name, preset)
                if mode == "inference":
                    degree = option.processes_per_pod
                    assert tensor_parallel_fits(
                        cap.serving, degree, shape.heads, shape.kv_heads, shape.intermediate
                    )
                else:
                    assert cap.training.max_nodes is None or option.pods <= cap.training.max_nodes
    assert offered > 20


def test_planner_sizes_training_by_the_rows_sharding_over_the_rows_holders() -> None:
    work = workload_of(_spec("train", "llama3-8b", sequenceLength=2048))
    pool = resolve_pool(
        AcceleratorPoolSpec.model_validate({"nodeSelector": {"p": "trn1"}, "instanceType": "trn1.32xlarge"}),
        CATALOG,
    )
    rates = rates_for(work, pool, CATALOG.calibration)
    found = options(work, pool, CATALOG.defaults, node_limit=8, rates=rates, hours_left=None)
    best = next(o for o in found if o.ok and o.devices_per_node == 16)
    row = pool.capability.training
    assert row is not None
    memory = llama.training_memory(
        work.shape, row, micro_batch=1, sequence_length=2048, precision="bf16",
        activation_checkpointing=best.activation_checkpointing,
    )  # fmt: skip
    holders = best.pods * 32  # every NeuronCore of the SPMD mesh holds a shard
    assert best.holders_per_pod == 32 and best.processes_per_pod == 1
    assert best.memory_need_gib == pytest.approx(memory.per_holder(holders) * 2 / GIB)

    # Were the XLA backend to replicate (as it once did), the same job would not fit a trn1 at all.
    replicated = replace(CAPABILITIES["neuron-xla"], training=replace(row, sharding="replicated"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(CAPABILITIES, "neuron-xla", replicated)
        again = options(work, pool, CATALOG.defaults, node_limit=8, rates=rates, hours_left=None)
    assert not any(o.ok for o in again)
    assert all(o.stage is Stage.MEMORY for o in again)
