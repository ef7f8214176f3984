"""Llama arithmetic: parameters from dimensions, FLOPs per token, and memory per shard holder.

Memory follows what the runtime does, as its capability row (llama_runtime.capabilities) states: the
training state is sharded (or not) by the row's `sharding` over every shard holder of the job (a
torchrun process, or a NeuronCore of the XLA SPMD mesh); each holder also keeps the gathered layers, its
micro batch's activations (with the attention scores where the row materialises them) and one chunk of
the loss's logits. Inference splits one replica's weights and KV cache over its tensor-parallel degree,
with the heads the engine pads or replicates to run that degree. The constants are checked against
measured runs in tests/runtime/test_memory.py (docs/memory.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_operator.api.job import ModelSpec
from llama_operator.api.presets import PRESETS, ModelDimensions
from llama_operator.api.types import Precision
from llama_runtime.capabilities import LOSS_CHUNK, Serving, Training, shardable_heads

GIB = 1024**3

# fp32 master weights (4) + gradients (4) + Adam m and v (8); bf16 keeps fp32 masters too.
TRAINING_STATE_BYTES_PER_PARAM = 16
OPTIMIZER_BYTES_PER_PARAM = 8
# Per logit of the loss at its peak (the start of backward): the logits in compute dtype plus two fp32
# tensors (log-softmax, its gradient); 10 in bf16. Measured: 12 in fp32 (docs/memory.md).
LOGIT_BYTES = 10
LOGIT_FP32_BYTES = LOGIT_BYTES - 2
# Values kept for backward per token of one decoder layer, in units of hidden (norm inputs and outputs,
# q, attention output, o_proj input, the residuals), KV width (k, v) and MLP width (gate, up, their
# product, the activation). Measured with saved-tensor tracking: 8 x hidden + 2 x kv + 4 x intermediate.
LAYER_HIDDEN, LAYER_KV, LAYER_MLP = 8, 2, 4
# Outside the layers: the embedding output and the final norm's input and output.
OUTER_HIDDEN = 3
# A recomputed layer's activations plus the gradients flowing through it, in units of its activations
# (measured 1.4-1.5, docs/memory.md).
RECOMPUTE_FACTOR = 1.5
# Fraction of the KV cache counted in a decode step's memory traffic (a half-full cache on average).
KV_TRAFFIC = 0.5


@dataclass(frozen=True, slots=True)
class LlamaShape:
    """The numbers of one architecture that sizing needs."""

    label: str
    """Preset name, or "custom"."""
    preset: str | None
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    parameters: int
    layer_parameters: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def layer_parameter_count(d: ModelDimensions) -> int:
    kv = d.num_kv_heads * (d.hidden_size // d.num_heads)
    attention = 2 * d.hidden_size * d.hidden_size + 2 * d.hidden_size * kv
    mlp = 3 * d.hidden_size * d.intermediate_size
    return attention + mlp + 2 * d.hidden_size


def parameter_count(d: ModelDimensions) -> int:
    """Parameters of a LlamaForCausalLM with these dimensions (embeddings, layers, final norm, head)."""
    embeddings = d.vocab_size * d.hidden_size * (1 if d.tie_embeddings else 2)
    return embeddings + d.num_layers * layer_parameter_count(d) + d.hidden_size


def shape_of(model: ModelSpec) -> LlamaShape:
    if model.dimensions is not None:
        dims, label, preset = model.dimensions, "custom", None
    elif model.preset is not None:
        dims, label, preset = PRESETS[model.preset], model.preset, model.preset
    else:
        raise ValueError("model has neither preset nor dimensions")
    return LlamaShape(
        label=label,
        preset=preset,
        hidden=dims.hidden_size,
        intermediate=dims.intermediate_size,
        layers=dims.num_layers,
        heads=dims.num_heads,
        kv_heads=dims.num_kv_heads,
        vocab=dims.vocab_size,
        tied=dims.tie_embeddings,
        parameters=parameter_count(dims),
        layer_parameters=layer_parameter_count(dims),
    )


def element_bytes(precision: Precision) -> int:
    return 2 if precision == "bf16" else 4


def training_flops_per_token(shape: LlamaShape, sequence_length: int) -> float:
    """Forward and backward: 6 per parameter plus attention scores (PaLM's 12 x layers x hidden x seq)."""
    return 6.0 * shape.parameters + 12.0 * shape.layers * shape.hidden * sequence_length


def inference_flops_per_token(shape: LlamaShape, context_length: int) -> float:
    """Forward only, attending over half the context on average."""
    return 2.0 * shape.parameters + 2.0 * shape.layers * shape.hidden * context_length


@dataclass(frozen=True, slots=True)
class TrainingMemory:
    """Bytes one shard holder keeps while training: `sharded` is the whole job's state that splits over
    the holders; the rest each holder keeps whatever their number."""

    sharded: float
    replicated: float
    """State every holder keeps whole (all of it when the row replicates)."""
    gathered: float
    """Unsharded at a time: the root's parameters and gradient, and one decoder layer's all-gather
    buffer, parameters, gradient and reduce-scatter buffer (measured: docs/memory.md)."""
    activations: float
    """Kept from forward to backward by one micro batch: every layer's activations (with checkpointing,
    only each layer's input), the embeddings and final norm, and materialised scores of kept layers."""
    logits: float
    """One loss chunk's logits, their fp32 log-softmax and gradients, at the start of backward."""
    recompute: float = 0.0
    """With checkpointing, a recomputed layer and the gradients through it, later in backward."""
    scores: float = 0.0
    """Of `activations` and `recompute`, the materialised attention scores."""

    def per_holder(self, holders: int) -> float:
        return self.sharded / max(holders, 1) + self.fixed

    @property
    def working(self) -> float:
        """Backward's transient peak: the loss chunk first, then (checkpointing) one recomputed layer."""
        return max(self.logits, self.recompute)

    @property
    def fixed(self) -> float:
        """What no number of holders shrinks."""
        return self.replicated + self.gathered + self.activations + self.working


def training_memory(
    shape: LlamaShape,
    row: Training,
    *,
    micro_batch: int,
    sequence_length: int,
    precision: Precision,
    activation_checkpointing: bool,
) -> TrainingMemory:
    """What the runtime line of `row` holds per shard holder for one micro batch of `micro_batch` x
    `sequence_length` tokens, in the precision the line really computes in."""
    el = element_bytes(row.precision_for(precision))  # type: ignore[arg-type]
    state = float(TRAINING_STATE_BYTES_PER_PARAM * shape.parameters)
    if row.sharding == "full":
        sharded, replicated = state, 0.0
    elif row.sharding == "optimizer":
        sharded = float(OPTIMIZER_BYTES_PER_PARAM * shape.parameters)
        replicated = state - sharded
    else:
        sharded, replicated = 0.0, state
    root = shape.parameters - shape.layers * shape.layer_parameters
    layer_params = shape.layer_parameters
    # FSDP2 keeps the root (embeddings, final norm, head) unsharded all step, and its gradient from the
    # loss on; a layer is at once all-gathered, unsharded, and its gradient unsharded and reduce-scattered.
    gathered = ((2 * root + 4 * layer_params) * el) if row.sharding == "full" else 0.0
    tokens = micro_batch * sequence_length
    per_token = LAYER_HIDDEN * shape.hidden + LAYER_KV * shape.kv_width + LAYER_MLP * shape.intermediate
    layer = float(tokens * per_token * el)
    scores = 0.0
    if row.attention == "materialized":
        # The fp32 softmax of [micro, heads, seq, seq] and (below fp32) its copy in compute dtype.
        scores = float(micro_batch * shape.heads * sequence_length**2 * (4 + (el if el < 4 else 0)))
    outer = tokens * OUTER_HIDDEN * shape.hidden * el
    if activation_checkpointing:
        activations = tokens * shape.layers * shape.hidden * el + outer
        recompute = RECOMPUTE_FACTOR * (layer + scores)
        scores *= RECOMPUTE_FACTOR
    else:
        scores *= shape.layers
        activations, recompute = shape.layers * layer + scores + outer, 0.0
    positions = min(sequence_length, LOSS_CHUNK) if row.chunked_loss else sequence_length
    logits = micro_batch * positions * shape.vocab * (el + LOGIT_FP32_BYTES)
    return TrainingMemory(sharded, replicated, gathered, activations, logits, recompute, scores)


def inference_replica_bytes(
    shape: LlamaShape, *, max_batch: int, context_length: int, precision: Precision = "bf16"
) -> tuple[float, float]:
    """(weights, full KV cache) of one replica in bytes, as the model defines them (no padding)."""
    el = element_bytes(precision)
    weights = float(shape.parameters * el)
    kv_cache = float(2 * shape.layers * shape.kv_width * context_length * max_batch * el)
    return weights, kv_cache


def inference_rank_bytes(
    shape: LlamaShape, row: Serving, degree: int, *, max_batch: int, context_length: int
) -> tuple[float, float] | None:
    """(weights, KV cache) one of a replica's `degree` tensor-parallel ranks holds, in the precision the
    engine serves in, counting the heads it pads or replicates; None if the engine cannot run `degree`."""
    heads = shardable_heads(row, degree, shape.heads, shape.kv_heads, shape.intermediate)
    if heads is None:
        return None
    q_heads, kv_heads = heads
    el = element_bytes(row.precision)  # type: ignore[arg-type]
    d = shape.head_dim
    attention = 2 * shape.hidden * q_heads * d + 2 * shape.hidden * kv_heads * d
    layer = attention + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden
    root = shape.parameters - shape.layers * shape.layer_parameters
    weights = float((root + shape.layers * layer) * el) / degree
    kv_cache = float(2 * shape.layers * kv_heads * d * context_length * max_batch * el) / degree
    return weights, kv_cache
