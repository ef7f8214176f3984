"""Run under torchrun by test_memory.py: one training step of the real Trainer per case, measured on
every rank (one torchrun for all cases: torch and the process group start once).

Usage: memory_probe.py CASES_JSON, a list of {"name", "flags": [TRAIN_FLAGS...], "eager": bool}; TRAIN_FLAGS
as `python -m llama_runtime train` takes them. `eager` swaps sdpa for HF's eager attention, which
materialises the scores as the XLA line does. Prints one JSON line per case and rank:
{"case", "rank", "peak": {total, at_peak, each, groups}, "state": {weights, gradients, optimizer, total}}.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
from typing import Any


def measure(case: dict[str, Any]) -> dict[str, Any]:
    from llama_runtime.backends import select_backend
    from llama_runtime.config import parse
    from llama_runtime.log import make_logger
    from llama_runtime.memory import PeakTracker, state_bytes
    from llama_runtime.train import Trainer

    cfg = parse(["train", *case["flags"]], env={})
    backend = select_backend(cfg.backend)
    if case.get("eager"):
        backend.attention = "eager"
    backend.init()
    trainer = Trainer(cfg, backend, make_logger("warning"))
    trainer.step(0, 0)  # AdamW's moments exist from here on, as in every later step
    with PeakTracker(trainer.model, trainer.optimizer) as tracker:
        trainer.step(1, cfg.batch_size)
    held = state_bytes(trainer.model, trainer.optimizer, backend)
    return {
        "case": case["name"],
        "rank": backend.dist.rank,
        "peak": dataclasses.asdict(tracker.peak),
        "state": {**dataclasses.asdict(held), "total": held.total},
    }


def main(cases: list[dict[str, Any]]) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        for case in cases:
            print(json.dumps(measure(case)), flush=True)
            gc.collect()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
