"""Filling a (meta, possibly FSDP-sharded) model with weights, each rank reading only the rows it holds.

Every source answers `read(name, start, stop)` with rows of the full tensor, so a seeded init, a HF
safetensors directory and a checkpoint written by any world size or backend all load the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import LlamaConfig

from llama_runtime.errors import UserError


class RowSource(Protocol):
    def read(self, name: str, start: int, stop: int, columns: tuple[int, int] | None = None) -> torch.Tensor:
        """Rows [start, stop) of the full tensor `name`; with `columns`, only those columns of them
        (a tensor-parallel rank of a row-wise layer holds a range of columns)."""
        ...


def local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of a tensor this rank holds and the index of the first one in the full tensor.

    FSDP2 shards dim 0 with torch.chunk's rule (ceil-sized chunks; trailing ranks may hold fewer or none).
    """
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(tensor, DTensor):
        return tensor, 0
    if tuple(tensor.placements) != (Shard(0),):
        raise ValueError(f"unexpected placements {tensor.placements}")
    local = tensor._local_tensor  # in place: to_local() may hand back a view autograd tracks
    mesh = tensor.device_mesh
    rows, world = tensor.shape[0], mesh.size()
    chunk = -(-rows // world)
    start = min(mesh.get_local_rank() * chunk, rows)
    if local.shape[0] != min(chunk, rows - start):
        raise ValueError(f"shard of {tuple(tensor.shape)} has {local.shape[0]} rows at {start}")
    return local, start


class SeededInit:
    """Llama's initialisation (normal(0, initializer_range), norms at one), generated in blocks of rows
    seeded by (seed, name, block): the same weights for any world size, without building full tensors."""

    BLOCK = 256

    def __init__(self, config: LlamaConfig, seed: int) -> None:
        self.std = float(config.initializer_range or 0.02)
        self.seed = seed

    def fill(self, name: str, local: torch.Tensor, start: int) -> None:
        if name.endswith("norm.weight"):
            local.fill_(1.0)
            return
        rest = tuple(local.shape[1:])
        key = int.from_bytes(hashlib.sha256(f"{self.seed}:{name}".encode()).digest()[:7], "little")
        stop = start + local.shape[0]
        for block in range(start // self.BLOCK, -(-stop // self.BLOCK)):
            lo, hi = block * self.BLOCK, (block + 1) * self.BLOCK
            gen = torch.Generator().manual_seed(key + block)
            values = torch.empty((self.BLOCK, *rest)).normal_(0.0, self.std, generator=gen)
            a, b = max(lo, start), min(hi, stop)
            local[a - start : b - start].copy_(values[a - lo : b - lo])


@dataclass(frozen=True)
class Piece:
    """Rows [start, start + rows) of a tensor, stored under `key` in a safetensors file."""

    path: Path
    key: str
    start: int
    rows: int


class SafetensorsReader:
    """Reads row ranges of named tensors spread over pieces in safetensors files, opening each file once."""

    def __init__(self, pieces: dict[str, list[Piece]]) -> None:
        self.pieces = pieces
        self._stack = ExitStack()
        self._files: dict[Path, Any] = {}

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _file(self, path: Path) -> Any:
        if path not in self._files:
            try:
                self._files[path] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except (SafetensorError, OSError) as e:
                raise UserError(f"cannot read {path}: {e}") from None
        return self._files[path]

    def read(self, name: str, start: int, stop: int, columns: tuple[int, int] | None = None) -> torch.Tensor:
        if name not in self.pieces:
            raise UserError(f"{name} is missing from the weights being loaded")
        parts = []
        for piece in sorted(self.pieces[name], key=lambda p: p.start):
            a, b = max(start, piece.start), min(stop, piece.start + piece.rows)
            if a < b:
                view = self._file(piece.path).get_slice(piece.key)
                rows = slice(a - piece.start, b - piece.start)
                parts.append(view[rows] if columns is None else view[rows, columns[0] : columns[1]])
        got = sum(p.shape[0] for p in parts)
        if got != stop - start:
            raise UserError(f"{name}: the stored pieces cover {got} of rows {start}..{stop}")
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def hf_reader(model_dir: Path) -> SafetensorsReader:
    """The safetensors of a HF model directory (one file or an index of shards)."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files = {name: model_dir / file for name, file in weight_map.items()}
    elif (model_dir / "model.safetensors").exists():
        path = model_dir / "model.safetensors"
        try:
            with safe_open(str(path), framework="pt") as f:
                files = {name: path for name in f.keys()}  # noqa: SIM118  safe_open is not a Mapping
        except (SafetensorError, OSError) as e:
            raise UserError(f"cannot read {path}: {e}") from None
    else:
        raise UserError(f"{model_dir} has no model.safetensors (only HF safetensors weights are loaded)")
    pieces: dict[str, list[Piece]] = {}
    for name, path in files.items():
        with safe_open(str(path), framework="pt") as f:
            rows = f.get_slice(name).get_shape()[0]
        pieces[name] = [Piece(path, name, 0, rows)]
    return SafetensorsReader(pieces)


def materialize(model: nn.Module, device: torch.device, source: SeededInit | RowSource) -> None:
    """Allocates the model's storage on `device` and fills every parameter's local rows from `source`."""
    model.to_empty(device=device)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # to_empty gives each module its own new Parameter, breaking the tie
    with torch.no_grad():
        for name, param in model.named_parameters():
            local, start = local_rows(param)
            if local.shape[0] == 0:
                continue
            if isinstance(source, SeededInit):
                host = torch.empty(local.shape, dtype=torch.float32)
                source.fill(name, host, start)
            else:
                host = source.read(name, start, start + local.shape[0])
                if tuple(host.shape) != tuple(local.shape):
                    raise UserError(
                        f"{name}: stored shape {tuple(host.shape)} does not fit {tuple(local.shape)}"
                    )
            local.copy_(host.to(local.dtype))
    reset_buffers(model, device)


def reset_buffers(model: nn.Module, device: torch.device) -> None:
    """Recomputes non-persistent buffers (rotary frequencies) that to_empty left uninitialised."""
    for module_name, module in list(model.named_modules()):
        if "RotaryEmbedding" in type(module).__name__:
            fresh = type(module)(module.config).to(device)
            parent = model.get_submodule(module_name.rpartition(".")[0]) if "." in module_name else model
            setattr(parent, module_name.rpartition(".")[2], fresh)


# torch-xla's SPMD FSDPv2 wrappers hold the module they wrap as `_orig_module`.
_WRAPPER = "_orig_module."


def named_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The model's parameters under LlamaForCausalLM's own names, whatever wraps its modules."""
    for name, param in model.named_parameters():
        yield name.replace(_WRAPPER, ""), param


def named_local_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, int, tuple[int, ...]]]:
    """(name, local rows, first row, full shape) for every parameter, tied ones once."""
    for name, param in named_parameters(model):
        local, start = local_rows(param)
        yield name, local, start, tuple(param.shape)
