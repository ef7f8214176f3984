"""The model to serve: the newest training checkpoint, else HF weights from a directory, else seeded.

Under torchrun the replica spans all its ranks with tensor parallelism (serve/tensor_parallel.py): each
rank builds the model on the meta device, keeps its shard, and reads only that shard's rows and columns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from llama_runtime import checkpoint
from llama_runtime.backends import Backend, select_backend
from llama_runtime.config import RunConfig
from llama_runtime.errors import UserError
from llama_runtime.log import Logger
from llama_runtime.model import build_model, llama_config
from llama_runtime.serve import tensor_parallel
from llama_runtime.serve.group import Group
from llama_runtime.tokenizer import Tokenizer, load_tokenizer
from llama_runtime.weights import SafetensorsReader, SeededInit, hf_reader

TENSOR_PARALLEL_BACKENDS = ("cpu", "cuda")


@dataclass(frozen=True)
class Loaded:
    model: nn.Module
    tokenizer: Tokenizer
    device: torch.device
    source: str
    group: Group | None
    """The replica's ranks when it spans several (tensor parallel), else None."""


def _group(backend: Backend) -> Group | None:
    if backend.dist.world == 1:
        return None
    if backend.name not in TENSOR_PARALLEL_BACKENDS:
        raise UserError(
            f"tensor-parallel serving runs on {' and '.join(TENSOR_PARALLEL_BACKENDS)}; "
            f"on {backend.name} a replica is one process (Neuron pools serve with NxD Inference)"
        )
    backend.init()
    return Group(backend.dist.rank, backend.dist.world, backend.device)


def load_for_inference(cfg: RunConfig, log: Logger) -> Loaded:
    backend = select_backend(cfg.backend)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    group = _group(backend)
    device = backend.device
    found = checkpoint.latest(cfg.checkpoint_dir)
    tokenizer = load_tokenizer(cfg.model_dir)
    source: SeededInit | SafetensorsReader
    if found is not None:
        config = llama_config(cfg.model, found, backend.attention)  # the checkpoint's own config.json
        source = checkpoint.Checkpoint(found).reader("model")
        origin = str(found)
    elif cfg.model_dir is not None:
        config = llama_config(cfg.model, cfg.model_dir, backend.attention)
        source = hf_reader(cfg.model_dir)
        origin = str(cfg.model_dir)
    else:
        config = llama_config(cfg.model, None, backend.attention)
        source = SeededInit(config, cfg.seed)
        origin = f"seeded init of {cfg.model} (untrained)"
        if group is None or group.rank == 0:
            log.warning("serving an untrained model: give a checkpoint or model directory")
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids, the model only {config.vocab_size}")
    precision = cfg.precision or backend.default_precision
    model = build_model(config, "meta").to(torch.bfloat16 if precision == "bf16" else torch.float32)
    layout: tensor_parallel.Layout = {}
    if group is not None:
        layout = tensor_parallel.shard(model, group.mesh())
    with source if isinstance(source, SafetensorsReader) else contextlib.nullcontext():
        tensor_parallel.fill(model, device, source, layout)
    model.config.use_cache = True
    model.eval()
    return Loaded(model, tokenizer, device, origin, group)
