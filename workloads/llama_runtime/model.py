"""Llama model definitions: the presets the planner knows, explicit dimensions, or a local HF directory.

Top-level imports stay light (no torch) so that the command line validates a preset before paying for
torch; the builders import transformers lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_runtime.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

_LLAMA3_ROPE_BASE: dict[str, Any] = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
_LLAMA3_COMMON: dict[str, Any] = {
    "vocab_size": 128256,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}

# LlamaConfig kwargs per preset; the planner's table (operator/llama_operator/planning) must agree.
# llama3-1b/3b are Llama 3.2, llama3-8b/70b are Llama 3.1 (published HF configs).
PRESETS: dict[str, dict[str, Any]] = {
    # Trains in seconds on one CPU core; vocabulary covers the byte tokenizer (259 ids).
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 128,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "bos_token_id": 256,
        "eos_token_id": 257,
    },
    "llama3-1b": {
        **_LLAMA3_COMMON,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "head_dim": 64,
        "tie_word_embeddings": True,
        "rope_parameters": {**_LLAMA3_ROPE_BASE, "factor": 32.0},
    },
    "llama3-3b": {
        **_LLAMA3_COMMON,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "head_dim": 128,
        "tie_word_embeddings": True,
        "rope_parameters": {**_LLAMA3_ROPE_BASE, "factor": 32.0},
    },
    "llama3-8b": {
        **_LLAMA3_COMMON,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "head_dim": 128,
        "tie_word_embeddings": False,
        "rope_parameters": {**_LLAMA3_ROPE_BASE, "factor": 8.0},
    },
    "llama3-70b": {
        **_LLAMA3_COMMON,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "head_dim": 128,
        "tie_word_embeddings": False,
        "rope_parameters": {**_LLAMA3_ROPE_BASE, "factor": 8.0},
    },
}

# Explicit dimensions in LLAMAOP_MODEL may name a preset as "base" and override any of these.
_EXPLICIT_KEYS = frozenset(
    {
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
        "rope_parameters",
        "bos_token_id",
        "eos_token_id",
        "initializer_range",
    }
)
_REQUIRED_EXPLICIT = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def model_kwargs(spec: str) -> dict[str, Any]:
    """LlamaConfig kwargs for a preset name or a JSON object of dimensions; UserError when invalid."""
    spec = spec.strip()
    if not spec.startswith("{"):
        if spec not in PRESETS:
            raise UserError(f"unknown model preset {spec!r}; known: {', '.join(PRESETS)} or JSON dimensions")
        return json.loads(json.dumps(PRESETS[spec]))  # deep copy
    try:
        given = json.loads(spec)
    except json.JSONDecodeError as e:
        raise UserError(f"model JSON is not valid: {e}") from None
    if not isinstance(given, dict):
        raise UserError("model JSON must be an object of LlamaConfig dimensions")
    base_name = given.pop("base", None)
    unknown = sorted(set(given) - _EXPLICIT_KEYS)
    if unknown:
        raise UserError(f"unknown model dimensions {unknown}; allowed: {sorted(_EXPLICIT_KEYS)} and 'base'")
    kwargs: dict[str, Any] = model_kwargs(base_name) if base_name else {}
    if not base_name:
        missing = [k for k in _REQUIRED_EXPLICIT if k not in given]
        if missing:
            raise UserError(f"model JSON lacks {missing} (or give a preset as 'base')")
        kwargs = {"vocab_size": 512, "bos_token_id": 256, "eos_token_id": 257, "tie_word_embeddings": True}
    kwargs.update(given)
    for key in (*_REQUIRED_EXPLICIT, "vocab_size"):
        value = kwargs.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserError(f"model dimension {key} must be a positive integer, got {value!r}")
    heads, kv = (
        kwargs["num_attention_heads"],
        kwargs.get("num_key_value_heads") or kwargs["num_attention_heads"],
    )
    if heads % kv:
        raise UserError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})")
    if "head_dim" not in kwargs and kwargs["hidden_size"] % heads:
        raise UserError(f"hidden_size ({kwargs['hidden_size']}) must be a multiple of num_attention_heads")
    return kwargs


def parameter_count(kwargs: dict[str, Any]) -> int:
    """Exact parameter count of LlamaForCausalLM for these kwargs (no bias, tied or untied head)."""
    h, i, n = kwargs["hidden_size"], kwargs["intermediate_size"], kwargs["num_hidden_layers"]
    heads = kwargs["num_attention_heads"]
    kv = kwargs.get("num_key_value_heads") or heads
    d = kwargs.get("head_dim") or h // heads
    v = kwargs["vocab_size"]
    attn = h * heads * d * 2 + h * kv * d * 2
    layer = attn + 3 * h * i + 2 * h
    head = 0 if kwargs.get("tie_word_embeddings") else v * h
    return v * h + n * layer + h + head


def llama_config(spec: str, model_dir: Path | None, attention: str = "sdpa") -> LlamaConfig:
    """The model's config: from the HF directory when given (its config.json wins), else from the spec."""
    from transformers import LlamaConfig

    if model_dir is not None:
        try:
            config = LlamaConfig.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {model_dir}/config.json: {e}") from None
    else:
        config = LlamaConfig(**model_kwargs(spec))
    # sdpa is the fast path on cpu/cuda; XLA takes "eager" (see backends/xla.py). Never a kernel download.
    config._attn_implementation = attention
    config.use_cache = False
    return config


def build_model(
    config: LlamaConfig, device: torch.device | str = "meta", cls: type[LlamaForCausalLM] | None = None
) -> LlamaForCausalLM:
    """An uninitialised model (of `cls`, a LlamaForCausalLM subclass such as loss.LlamaForTraining);
    weights.materialize fills it (seeded init, HF weights or a checkpoint)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device(device):
        model = (cls or LlamaForCausalLM)(config)
    return model
