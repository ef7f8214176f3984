"""Llama architectures by name. The preset names are part of the API (an enum in the CRD)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from llama_operator.api import rules
from llama_operator.api.base import ApiModel

PresetName = Literal["tiny", "llama3-1b", "llama3-3b", "llama3-8b", "llama3-70b"]


class ModelDimensions(ApiModel):
    """Explicit Llama dimensions (the fields of a Hugging Face LlamaConfig)."""

    __rules__ = rules.DIMENSIONS

    hidden_size: Annotated[int, Field(ge=8, le=65536)]
    """Width of the residual stream."""
    intermediate_size: Annotated[int, Field(ge=8, le=262144)]
    """Width of the SwiGLU feed-forward layer."""
    num_layers: Annotated[int, Field(ge=1, le=512)]
    """Number of decoder layers."""
    num_heads: Annotated[int, Field(ge=1, le=1024)]
    """Attention query heads."""
    num_kv_heads: Annotated[int, Field(ge=1, le=1024)]
    """Key/value heads (grouped-query attention); divides numHeads."""
    vocab_size: Annotated[int, Field(ge=2, le=1048576)]
    """Tokenizer vocabulary size."""
    max_position_embeddings: Annotated[int, Field(ge=16, le=1048576)] = 8192
    """Longest sequence the model supports."""
    tie_embeddings: bool = False
    """Share the input embedding with the output head."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


PRESETS: Final[dict[str, ModelDimensions]] = {
    "tiny": ModelDimensions(
        hidden_size=128,
        intermediate_size=384,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=512,
        max_position_embeddings=2048,
        tie_embeddings=True,
    ),
    "llama3-1b": ModelDimensions(
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        tie_embeddings=True,
    ),
    "llama3-3b": ModelDimensions(
        hidden_size=3072,
        intermediate_size=8192,
        num_layers=28,
        num_heads=24,
        num_kv_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        tie_embeddings=True,
    ),
    "llama3-8b": ModelDimensions(
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
    ),
    "llama3-70b": ModelDimensions(
        hidden_size=8192,
        intermediate_size=28672,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
    ),
}
