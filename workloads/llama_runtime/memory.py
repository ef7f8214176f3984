"""What the runtime really keeps per device, for the planner's fit check to mirror (no torch import).

Training on cpu/cuda/native neuron with world > 1 uses FSDP2 over every rank: fp32 master weights,
fp32 gradients and AdamW's two fp32 moments are all sharded (16 bytes per parameter / world); in bf16
one decoder layer's weights are gathered at a time (plus one prefetched). A world of one and the XLA
path keep everything replicated. Activations are an estimate (sdpa/flash attention: no seq^2 term).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_runtime.model import parameter_count

STATE_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + AdamW exp_avg + exp_avg_sq


@dataclass(frozen=True)
class TrainMemory:
    state: int  # weights, gradients, optimizer: sharded across the world where the runtime shards
    gathered: int  # transient unsharded layers during forward/backward
    activations: int  # saved for backward, per micro batch
    logits: int  # the output projection's logits, fp32 copy and gradient

    @property
    def total(self) -> int:
        return self.state + self.gathered + self.activations + self.logits


def _layer_params(kw: dict[str, Any]) -> int:
    h, i = kw["hidden_size"], kw["intermediate_size"]
    heads = kw["num_attention_heads"]
    kv, d = kw.get("num_key_value_heads") or heads, kw.get("head_dim") or h // heads
    return 2 * h * heads * d + 2 * h * kv * d + 3 * h * i + 2 * h


def train_bytes_per_device(
    kwargs: dict[str, Any],
    world: int,
    micro_batch: int,
    seq_len: int,
    precision: str = "bf16",
    activation_checkpointing: bool = False,
    sharded: bool = True,
) -> TrainMemory:
    """Bytes one device holds while training `kwargs` (LlamaConfig dimensions, e.g. a PRESETS entry)."""
    shards = world if sharded and world > 1 else 1
    params = parameter_count(kwargs)
    state = -(-params * STATE_BYTES_PER_PARAM // shards)
    act_bytes = 2 if precision == "bf16" else 4
    gathered = 2 * _layer_params(kwargs) * act_bytes if shards > 1 else 0
    h, layers = kwargs["hidden_size"], kwargs["num_hidden_layers"]
    tokens = micro_batch * seq_len
    # ~34 hidden-sized values per token per layer are kept for backward (attention, MLP, norms);
    # with checkpointing only each layer's input is, plus one layer being recomputed.
    per_layer = 34 * tokens * h * act_bytes // 2
    activations = (
        layers * tokens * h * act_bytes + per_layer if activation_checkpointing else layers * per_layer
    )
    logits = tokens * kwargs["vocab_size"] * (act_bytes + 4 + 4)
    return TrainMemory(state, gathered, activations, logits)


def serve_bytes(kwargs: dict[str, Any], max_batch: int, max_tokens: int, precision: str = "bf16") -> int:
    """Weights plus a full KV cache for max_batch sequences of max_tokens (prompt + generated)."""
    width = 2 if precision == "bf16" else 4
    heads = kwargs["num_attention_heads"]
    kv, d = (
        kwargs.get("num_key_value_heads") or heads,
        kwargs.get("head_dim") or kwargs["hidden_size"] // heads,
    )
    cache = 2 * kwargs["num_hidden_layers"] * kv * d * max_batch * max_tokens * width
    return parameter_count(kwargs) * width + cache
