"""Backend-neutral checkpoints: safetensors pieces of each rank's rows, committed by one directory rename.

Layout of <dir>/step-000000100/:
  state.json                  step, data position, world, shapes, file sizes and sha256 (written last)
  config.json                 the HF LlamaConfig, so the directory describes its model
  model-rank00000.safetensors rows [start, start+n) of each parameter this rank holds (fp32)
  optim-rank00000.safetensors the same rows of AdamW's exp_avg / exp_avg_sq, and this rank's RNG state
Every rank writes into step-N.tmp/ (the directory must be shared by all nodes); rank 0 renames it once
all have finished, so a crash never leaves a half checkpoint that looks complete. Loading reads only the
rows a rank needs, so a checkpoint resumes on any world size and on cpu, cuda or neuron alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llama_runtime.backends import Backend
from llama_runtime.errors import UserError
from llama_runtime.weights import Piece, SafetensorsReader, local_rows, named_parameters

FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d{9})$")
_OPT_KEYS = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class TrainState:
    step: int
    data_position: int  # sequences consumed, across all ranks
    tokens_seen: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, tensors: dict[str, torch.Tensor], starts: dict[str, int]) -> dict[str, Any]:
    save_file(tensors, str(path), metadata={"starts": json.dumps(starts)})
    _fsync(path)
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def save(
    root: Path,
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    backend: Backend,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Writes step-N collectively (every rank calls this) and returns its path."""
    rank = backend.dist.rank
    final = root / f"step-{state.step:09d}"
    tmp = root / f"step-{state.step:09d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    backend.barrier()
    # Replicated backends hold full copies on every rank: one writer is enough.
    writes = backend.sharded or rank == 0
    if writes:
        model_t: dict[str, torch.Tensor] = {}
        optim_t: dict[str, torch.Tensor] = {}
        starts: dict[str, int] = {}
        for name, param in named_parameters(model):
            local, start = local_rows(param)
            if local.shape[0] == 0:
                continue
            starts[name] = start
            model_t[name] = backend.to_host(local).float().contiguous()
            opt_state = optimizer.state.get(param, {})
            for key in _OPT_KEYS:
                if key in opt_state:
                    optim_t[f"{name}::{key}"] = (
                        backend.to_host(local_rows(opt_state[key])[0]).float().contiguous()
                    )
        optim_t["__rng__"] = torch.get_rng_state()
        files = {
            f"model-rank{rank:05d}.safetensors": _write(
                tmp / f"model-rank{rank:05d}.safetensors", model_t, starts
            ),
            f"optim-rank{rank:05d}.safetensors": _write(
                tmp / f"optim-rank{rank:05d}.safetensors", optim_t, starts
            ),
        }
        (tmp / f"manifest-rank{rank:05d}.json").write_text(json.dumps(files))
    backend.barrier()
    if rank == 0:
        files = {}
        for manifest in sorted(tmp.glob("manifest-rank*.json")):
            files.update(json.loads(manifest.read_text()))
            manifest.unlink()
        model.config.to_json_file(str(tmp / "config.json"))
        doc = {
            "format": FORMAT,
            "step": state.step,
            "data_position": state.data_position,
            "tokens_seen": state.tokens_seen,
            "world": backend.dist.world if backend.sharded else 1,
            "backend": backend.name,
            "shapes": {name: list(p.shape) for name, p in named_parameters(model)},
            "files": files,
            **extra,
        }
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
        _fsync(tmp / "state.json")
        os.replace(tmp, final)
        _fsync(root)
        _prune(root, keep)
    backend.barrier()
    return final


def _prune(root: Path, keep: int) -> None:
    complete = sorted(d for d in root.iterdir() if _STEP_DIR.match(d.name) and (d / "state.json").exists())
    for old in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def latest(root: Path | None) -> Path | None:
    """The newest complete checkpoint under root (in-progress .tmp directories never count)."""
    if root is None or not root.is_dir():
        return None
    steps = sorted(d for d in root.iterdir() if _STEP_DIR.match(d.name) and (d / "state.json").exists())
    return steps[-1] if steps else None


class Checkpoint:
    """An opened, verified checkpoint; `reader(kind)` reads its rows for any target sharding."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.doc: dict[str, Any] = json.loads((path / "state.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"checkpoint {path} is corrupt: state.json: {e}") from None
        if self.doc.get("format") != FORMAT:
            raise UserError(
                f"checkpoint {path} has format {self.doc.get('format')}, this runtime reads {FORMAT}"
            )
        for name, meta in self.doc["files"].items():
            f = path / name
            if not f.is_file() or f.stat().st_size != meta["bytes"]:
                size = f.stat().st_size if f.is_file() else "no"
                raise UserError(
                    f"checkpoint {path} is corrupt: {name} has {size} bytes, expected {meta['bytes']}"
                )
        self._verified: set[str] = set()

    @property
    def state(self) -> TrainState:
        return TrainState(self.doc["step"], self.doc["data_position"], self.doc.get("tokens_seen", 0))

    def verify(self, name: str) -> None:
        if name not in self._verified:
            if _sha256(self.path / name) != self.doc["files"][name]["sha256"]:
                raise UserError(f"checkpoint {self.path} is corrupt: {name} fails its sha256 check")
            self._verified.add(name)

    def reader(self, kind: str, suffix: str = "") -> SafetensorsReader:
        """Rows of `kind` (model | optim) tensors; `suffix` selects e.g. '::exp_avg' under parameter names."""
        pieces: dict[str, list[Piece]] = {}
        for name in sorted(self.doc["files"]):
            if not name.startswith(f"{kind}-rank"):
                continue
            self.verify(name)
            path = self.path / name
            with safe_open(str(path), framework="pt") as f:
                starts: dict[str, int] = json.loads((f.metadata() or {})["starts"])
                for key in f.keys():  # noqa: SIM118  safe_open is not a Mapping
                    if not key.endswith(suffix) or key == "__rng__" or (not suffix and "::" in key):
                        continue
                    param = key[: len(key) - len(suffix)] if suffix else key
                    rows = f.get_slice(key).get_shape()[0]
                    pieces.setdefault(param, []).append(Piece(path, key, starts[param], rows))
        return SafetensorsReader(pieces)

    def rng_state(self, rank: int, world: int) -> torch.Tensor | None:
        """This rank's saved RNG state if the world is unchanged, else None (a new layout draws anew)."""
        name = f"optim-rank{rank:05d}.safetensors"
        if self.doc["world"] != world or name not in self.doc["files"]:
            return None
        with safe_open(str(self.path / name), framework="pt") as f:
            return f.get_tensor("__rng__")


def load_optimizer(
    ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, backend: Backend | None = None
) -> None:
    """Recreates AdamW's state for this rank's rows (step count from state.json), sharded as the backend
    shards its parameter."""
    step_count = float(ckpt.doc.get("optimizer_steps", ckpt.doc["step"]))
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    readers = {key: ckpt.reader("optim", f"::{key}") for key in _OPT_KEYS}
    try:
        with torch.no_grad():
            for name, param in named_parameters(model):
                group = groups[id(param)]
                on_device = group.get("fused") or group.get("capturable")
                state: dict[str, torch.Tensor] = {
                    "step": torch.tensor(
                        step_count, dtype=torch.float32, device=param.device if on_device else "cpu"
                    )
                }
                for key, reader in readers.items():
                    target = torch.zeros_like(param, memory_format=torch.preserve_format)
                    local, start = local_rows(target)
                    if local.shape[0]:
                        local.copy_(reader.read(name, start, start + local.shape[0]).to(local.dtype))
                    if backend is not None:
                        backend.shard_like(target, param)
                    state[key] = target
                optimizer.state[param] = state
    finally:
        for reader in readers.values():
            reader.__exit__(None, None, None)
