"""The model to serve: the newest training checkpoint, else HF weights from a directory, else seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llama_runtime import checkpoint
from llama_runtime.backends import select_backend
from llama_runtime.config import RunConfig
from llama_runtime.errors import UserError
from llama_runtime.log import Logger
from llama_runtime.model import build_model, llama_config
from llama_runtime.tokenizer import Tokenizer, load_tokenizer
from llama_runtime.weights import SeededInit, hf_reader, materialize


@dataclass(frozen=True)
class Loaded:
    model: nn.Module
    tokenizer: Tokenizer
    device: torch.device
    source: str


def load_for_inference(cfg: RunConfig, log: Logger) -> Loaded:
    backend = select_backend(cfg.backend)
    if backend.dist.world > 1:
        raise UserError("serve runs one process per replica; start it without torchrun")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = backend.device
    found = checkpoint.latest(cfg.checkpoint_dir)
    tokenizer = load_tokenizer(cfg.model_dir)
    if found is not None:
        ckpt = checkpoint.Checkpoint(found)
        config = llama_config(cfg.model, found, backend.attention)  # the checkpoint's own config.json
        model = build_model(config, "meta")
        with ckpt.reader("model") as source:
            materialize(model, torch.device("cpu"), source)
        origin = str(found)
    elif cfg.model_dir is not None:
        config = llama_config(cfg.model, cfg.model_dir, backend.attention)
        model = build_model(config, "meta")
        with hf_reader(cfg.model_dir) as source:
            materialize(model, torch.device("cpu"), source)
        origin = str(cfg.model_dir)
    else:
        config = llama_config(cfg.model, None, backend.attention)
        model = build_model(config, "meta")
        materialize(model, torch.device("cpu"), SeededInit(config, cfg.seed))
        origin = f"seeded init of {cfg.model} (untrained)"
        log.warning("serving an untrained model: give a checkpoint or model directory")
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids, the model only {config.vocab_size}")
    precision = cfg.precision or backend.default_precision
    model.config.use_cache = True
    model = model.to(device=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    return Loaded(model, tokenizer, device, origin)
