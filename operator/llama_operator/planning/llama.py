"""Llama arithmetic: parameters from dimensions, FLOPs per token, and memory per rank.

Memory follows what the runtime does (issue 5): FSDP-style full sharding of parameters, gradients and
Adam state over every rank of the job; activations and the unsharded layer being computed stay per rank.
Inference shards the weights and KV cache of one replica over its devices (tensor parallel).
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_operator.api.job import ModelSpec
from llama_operator.api.presets import PRESETS, ModelDimensions
from llama_operator.api.types import Precision

GIB = 1024**3

# fp32 master weights (4) + gradients (4) + Adam m and v (8); bf16 keeps fp32 masters too.
TRAINING_STATE_BYTES_PER_PARAM = 16
# Logits in compute dtype, their fp32 copy for the loss, and its gradient: bytes per logit.
LOGIT_BYTES = 10
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


def training_state_bytes(shape: LlamaShape) -> float:
    """Parameters, gradients and optimizer state of the whole model, sharded over all ranks."""
    return float(TRAINING_STATE_BYTES_PER_PARAM * shape.parameters)


def training_rank_bytes(
    shape: LlamaShape,
    *,
    micro_batch: int,
    sequence_length: int,
    precision: Precision,
    activation_checkpointing: bool,
) -> float:
    """Per-rank memory that does not shrink with more ranks: the gathered layers (current and prefetched,
    weights and gradients), activations of one micro batch, and the logits."""
    el = element_bytes(precision)
    gathered = 2 * 2 * shape.layer_parameters * el
    layer_activations = (6 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate) * el
    if activation_checkpointing:
        per_token = shape.layers * shape.hidden * el + layer_activations
    else:
        per_token = shape.layers * layer_activations
    tokens = micro_batch * sequence_length
    return gathered + tokens * per_token + tokens * shape.vocab * LOGIT_BYTES


def inference_replica_bytes(
    shape: LlamaShape, *, max_batch: int, context_length: int, precision: Precision = "bf16"
) -> tuple[float, float]:
    """(weights, full KV cache) of one replica in bytes."""
    el = element_bytes(precision)
    weights = float(shape.parameters * el)
    kv_cache = float(2 * shape.layers * shape.kv_width * context_length * max_batch * el)
    return weights, kv_cache
