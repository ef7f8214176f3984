"""The training loss without the full logits: cross-entropy over chunks of the sequence.

A micro batch's logits are tokens x vocab: at 8192 tokens and Llama 3's 128,256 ids that is 4.2 GB in
fp32, plus its bf16 copy and its gradient. Here the head and the loss run on LOSS_CHUNK positions at a
time, each chunk under activation checkpointing, so forward keeps only the final hidden states and
backward recomputes one chunk's logits at a time. A sequence of one chunk is not recomputed: holding its
logits costs no more than the chunk the memory model counts, and recomputing the head would cost a
fifth of a small model's step. The result equals the plain loss up to float summation order. The
planner's memory model counts one chunk (capabilities.LOSS_CHUNK).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import LlamaForCausalLM

from llama_runtime.capabilities import LOSS_CHUNK

Checkpoint = Callable[..., torch.Tensor]


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight)
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32, fp64 stays
    return F.cross_entropy(wide.flatten(0, 1), labels.flatten(), reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk: int = LOSS_CHUNK,
    recompute: Checkpoint | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` ([batch, seq, vocab] never built) against `labels`."""
    seq = hidden.shape[1]
    if seq <= chunk:
        return _chunk_loss(hidden, weight, labels) / labels.numel()
    recompute = recompute or partial(checkpoint, use_reentrant=False)
    total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
    for start in range(0, seq, chunk):
        stop = min(start + chunk, seq)
        total = total + recompute(_chunk_loss, hidden[:, start:stop], weight, labels[:, start:stop])
    return total / labels.numel()


class LlamaForTraining(LlamaForCausalLM):
    """LlamaForCausalLM whose forward, given labels, returns the mean loss by `chunked_cross_entropy`.

    The loss lives in forward (not beside it) so FSDP2's root hooks gather the head's weight and
    reduce its gradient, and XLA's FSDPv2 wrapper sees it; parameter names stay LlamaForCausalLM's.
    """

    loss_chunk: int = LOSS_CHUNK
    recompute: Checkpoint | None = None

    def forward(  # type: ignore[override]
        self, input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        if labels is None:
            return super().forward(input_ids=input_ids, **kwargs)
        hidden = self.model(input_ids=input_ids, **kwargs).last_hidden_state
        return chunked_cross_entropy(hidden, self.lm_head.weight, labels, self.loss_chunk, self.recompute)
