"""Loads a model as `llama_runtime serve` does (alone, or one rank of a tensor-parallel replica under
torchrun), generates greedily through the serving engine, and measures what each rank holds.

For each case (a set of serve arguments: one weights source) it prints, from rank 0, the completions
and per rank the bytes of parameters and of a KV cache filled with `--kv-batch` sequences of
`--kv-tokens` tokens, as one JSON line. Run by tests/runtime/test_serve_tp.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
import torch.distributed as dist
from transformers import DynamicCache

from llama_runtime.config import parse
from llama_runtime.log import make_logger
from llama_runtime.metrics import ServeMetrics
from llama_runtime.serve.engine import Engine, Request
from llama_runtime.serve.loading import load_for_inference
from llama_runtime.serve.tensor_parallel import local_bytes


def kv_bytes(model: torch.nn.Module, batch: int, tokens: int, vocab: int) -> int:
    """Bytes of this rank's KV cache after a prefill of batch x tokens (every layer's keys and values)."""
    cache = DynamicCache()
    ids = torch.arange(batch * tokens).reshape(batch, tokens) % vocab
    with torch.inference_mode():
        model(input_ids=ids, use_cache=True, **{_cache_kw(model): cache})
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def _cache_kw(model: torch.nn.Module) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def probe(serve_args: list[str], prompts: list[str], args: argparse.Namespace) -> dict[str, Any] | None:
    """One source: load, measure, generate; rank 0 returns the result, the others None."""
    cfg = parse(["serve", *serve_args], env={})
    loaded = load_for_inference(cfg, make_logger("warning"))
    group = loaded.group
    if group is not None:
        group.barrier()
    vocab = int(loaded.model.config.vocab_size)
    mine = {
        "rank": group.rank if group else 0,
        "weights": local_bytes(loaded.model),
        "kv_cache": kv_bytes(loaded.model, args.kv_batch, args.kv_tokens, vocab),
    }
    engine = Engine(loaded.model, loaded.tokenizer, loaded.device, 8, ServeMetrics(), group=group)
    texts: list[str] = []
    if group is not None and not group.leader:
        engine.follow()
    else:
        tok = loaded.tokenizer
        bos = [tok.bos_id] if tok.bos_id is not None else []
        requests = [
            Request(prompt=bos + tok.encode(p), max_tokens=args.max_tokens, temperature=0.0) for p in prompts
        ]
        futures = [engine.submit(r) for r in requests]
        texts = [f.result(timeout=600).text for f in futures]
        engine.close()
    ranks: list[Any] = [mine]
    if group is not None:
        ranks = [None] * group.world
        dist.all_gather_object(ranks, mine)
        if not group.leader:
            return None
    return {"source": loaded.source, "texts": texts, "ranks": ranks}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", required=True, help="JSON object: case name -> serve arguments")
    parser.add_argument("--prompts", required=True, help="JSON list of prompts")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--kv-batch", type=int, default=4)
    parser.add_argument("--kv-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    prompts = json.loads(args.prompts)
    results = {name: probe(serve_args, prompts, args) for name, serve_args in json.loads(args.cases).items()}
    world = dist.get_world_size() if dist.is_initialized() else 1
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("PROBE " + json.dumps({"world": world, "cases": results}), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
