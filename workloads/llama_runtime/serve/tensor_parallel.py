"""Tensor parallelism for the runtime's own engine: one replica spans every rank of its pod.

transformers' Llama carries a tensor-parallel plan (`model.tp_plan`: q/k/v/gate/up column-wise, o/down
row-wise, a vocabulary-parallel embedding, the head column-wise with its logits gathered), and
`transformers.distributed.tensor_parallel.apply_tensor_parallelism` turns a model's parameters into
DTensor shards on a 1-D device mesh; without gradients its linear layers run plain local matmuls and one
all-reduce per row-wise layer. We apply it to a meta model and fill each rank's local slice straight
from the weights (seeded init, HF safetensors, a training checkpoint), so no rank ever holds the whole
model. The collectives are torch.distributed's, so the same code runs over gloo (cpu) and NCCL (cuda).

KV heads fewer than the degree (8 KV heads on 16 ranks) are replicated, as vLLM does: the plan's
column-wise split would cut heads in two, so each rank keeps whole the one KV head its query heads read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig

from llama_runtime.capabilities import CAPABILITIES, Serving, tensor_parallel_fits
from llama_runtime.errors import UserError
from llama_runtime.weights import RowSource, SeededInit, reset_buffers

KV_PROJECTIONS = ("k_proj", "v_proj")


def own_engine() -> Serving:
    """The capability table's row for this engine (the planner offers degrees by the same rule)."""
    return next(c.serving for c in CAPABILITIES.values() if c.serving and c.serving.engine == "llama-runtime")


def check_degree(config: LlamaConfig, degree: int) -> None:
    heads = int(config.num_attention_heads)
    kv = int(config.num_key_value_heads or heads)
    if not tensor_parallel_fits(own_engine(), degree, heads, kv):
        raise UserError(
            f"tensor parallel {degree} does not split this model: {heads} attention heads and {kv} KV heads "
            f"(the degree must divide the heads, and divide or be a multiple of the KV heads)"
        )


@dataclass(frozen=True, slots=True)
class Slice:
    """Where a rank's local tensor lies in the full one: [start, stop) along `dim`."""

    dim: int
    start: int
    stop: int


Layout = dict[str, Slice]
"""Parameter name -> this rank's slice; parameters not in it are whole on every rank."""


def _wildcard(name: str) -> str:
    """`model.layers.3.mlp` -> `model.layers.*.mlp`, the form the plan's keys take."""
    return re.sub(r"\.\d+(\.|$)", lambda m: ".*" + m.group(1), name)


def expand_plan(model: nn.Module, patterns: dict[str, str]) -> dict[str, str]:
    """One entry per parameter to shard and per module to hook, in the form apply_tensor_parallelism takes.

    Tied parameters appear once (named_parameters skips the head's copy of the embedding), so the tie
    survives: the head's forward is hooked and reads the embedding's shard.
    """
    plan: dict[str, str] = {}
    for name, _ in model.named_parameters():
        style = patterns.get(_wildcard(name)) or patterns.get(_wildcard(name.rpartition(".")[0]))
        if style is not None:
            plan[name] = style
    for name, _ in model.named_modules():
        style = patterns.get(_wildcard(name))
        if name and style is not None:
            plan[name] = style
    return plan


def shard(model: nn.Module, mesh: torch.distributed.device_mesh.DeviceMesh) -> Layout:
    """Splits a meta model over `mesh` (1-D, this replica's ranks) and says which slice this rank keeps."""
    from torch.distributed.tensor import DTensor, Shard

    try:
        from transformers.distributed.tensor_parallel import apply_tensor_parallelism
    except ImportError:
        raise UserError(
            "tensor-parallel serving needs transformers 5 with transformers.distributed (the images pin 5.2x)"
        ) from None

    config = model.config
    degree, rank = mesh.size(), mesh.get_local_rank()
    check_degree(config, degree)
    heads = int(config.num_attention_heads)
    kv = int(config.num_key_value_heads or heads)
    patterns = dict(model.tp_plan)
    layout: Layout = {}
    if degree > kv:
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        group = rank // (degree // kv)  # the KV head this rank's query heads read
        for key in [k for k in patterns if k.rpartition(".")[2] in KV_PROJECTIONS]:
            del patterns[key]
        for index, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            for proj in KV_PROJECTIONS:
                old = getattr(attn, proj)
                setattr(
                    attn,
                    proj,
                    nn.Linear(
                        old.in_features,
                        head_dim,
                        bias=old.bias is not None,
                        device="meta",
                        dtype=old.weight.dtype,
                    ),
                )
                layout[f"model.layers.{index}.self_attn.{proj}.weight"] = Slice(
                    0, group * head_dim, (group + 1) * head_dim
                )
            attn.num_key_value_groups = heads // degree  # local query heads per (one) local KV head
    apply_tensor_parallelism(model, mesh, expand_plan(model, patterns))
    for name, param in model.named_parameters():
        if not isinstance(param, DTensor):
            continue
        (placement,) = param.placements
        if not isinstance(placement, Shard):
            continue
        dim = placement.dim % param.dim()
        size = param.shape[dim]
        chunk = -(-size // degree)  # torch.chunk's rule, which DTensor's Shard follows
        start = min(rank * chunk, size)
        local = param.to_local().shape[dim]
        if local != min(chunk, size - start):
            raise ValueError(f"{name}: shard of {tuple(param.shape)} has {local} along dim {dim} at {start}")
        layout[name] = Slice(dim, start, start + local)
    return layout


def _local(param: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return param._local_tensor if isinstance(param, DTensor) else param.data


def _seeded(init: SeededInit, name: str, shape: tuple[int, ...], where: Slice | None) -> torch.Tensor:
    if where is None or where.dim == 0:
        start, stop = (0, shape[0]) if where is None else (where.start, where.stop)
        host = torch.empty((stop - start, *shape[1:]))
        init.fill(name, host, start)
        return host
    # A column range: generate whole rows a block at a time (the seeded values are keyed by row).
    host = torch.empty((shape[0], where.stop - where.start, *shape[2:]))
    block = torch.empty((init.BLOCK, *shape[1:]))
    for lo in range(0, shape[0], init.BLOCK):
        rows = block[: min(init.BLOCK, shape[0] - lo)]
        init.fill(name, rows, lo)
        host[lo : lo + rows.shape[0]].copy_(rows.narrow(where.dim, where.start, where.stop - where.start))
    return host


def _stored(source: RowSource, name: str, shape: tuple[int, ...], where: Slice | None) -> torch.Tensor:
    if where is None:
        return source.read(name, 0, shape[0])
    if where.dim == 0:
        return source.read(name, where.start, where.stop)
    if where.dim == 1:
        return source.read(name, 0, shape[0], columns=(where.start, where.stop))
    raise ValueError(f"{name}: cannot read a slice along dim {where.dim}")


def fill(model: nn.Module, device: torch.device, source: SeededInit | RowSource, layout: Layout) -> None:
    """Allocates the (meta, possibly sharded) model on `device` and fills each rank's slice from `source`."""
    model.to_empty(device=device)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # to_empty gives each module its own new Parameter, breaking the tie
    full_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    with torch.no_grad():
        for name, param in model.named_parameters():
            local, where, shape = _local(param), layout.get(name), full_shapes[name]
            if where is None and tuple(local.shape) != shape:
                raise ValueError(f"{name}: local {tuple(local.shape)} of {shape} has no slice in the layout")
            if isinstance(source, SeededInit):
                host = _seeded(source, name, shape, where)
            else:
                host = _stored(source, name, shape, where)
            if tuple(host.shape) != tuple(local.shape):
                raise UserError(f"{name}: stored shape {tuple(host.shape)} does not fit {tuple(local.shape)}")
            local.copy_(host.to(local.dtype))
    reset_buffers(model, device)


def local_bytes(model: nn.Module) -> int:
    """Bytes of parameters this rank holds (tied ones once)."""
    return sum(_local(p).numel() * _local(p).element_size() for _, p in model.named_parameters())
