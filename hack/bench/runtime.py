"""Training tokens/s on CPU: llama_runtime's loop against a plain transformers loop, same process.

Same model config and initial weights, batch, sequence length, dtype (fp32) and thread count; the
two loops alternate step by step and the median step time counts, so machine noise hits both.
Prints one line per config and the ratio (runtime / plain; > 1 means the runtime is faster), by wall
clock and by the CPU time each step took (the steadier figure on a shared machine).

    .venv/bin/python hack/bench/runtime.py [--threads N] [--rounds R] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workloads"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LlamaForCausalLM

from llama_runtime.backends import select_backend
from llama_runtime.config import parse
from llama_runtime.log import make_logger
from llama_runtime.train import Trainer

# llama3-1b's layer shape (hidden 2048, 32 heads, 8 KV heads, MLP 8192) with 2 layers and a smaller
# vocabulary, so a step takes seconds on two cores.
LLAMA3_1B_SMALL = json.dumps(
    {
        "base": "llama3-1b",
        "num_hidden_layers": 2,
        "vocab_size": 16384,
        "bos_token_id": 256,
        "eos_token_id": 257,
    }
)
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"model": "tiny", "batch": 8, "seq": 256, "steps": 15},
    "llama3-1b-2layer": {"model": LLAMA3_1B_SMALL, "batch": 2, "seq": 128, "steps": 3},
}


def plain_loop(trainer: Trainer, batches: list[torch.Tensor]) -> tuple[LlamaForCausalLM, Any]:
    """The textbook transformers loop on a copy of the runtime's initial weights."""
    model = LlamaForCausalLM(trainer.model.config)
    model.load_state_dict(trainer.model.state_dict())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step(i: int) -> None:
        x = batches[i % len(batches)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def bench(name: str, spec: dict[str, Any], threads: int, rounds: int, compile_layers: bool) -> float:
    args = ["train", "--backend", "cpu", "--model", spec["model"], "--seq-len", str(spec["seq"])]
    args += ["--batch-size", str(spec["batch"]), "--steps", "1000", "--metrics-port", "0"]
    args += ["--compile", "1" if compile_layers else "0"]
    backend = select_backend("cpu")
    backend.init()
    trainer = Trainer(parse(args, env={}), backend, make_logger("warning"))
    batches = [
        torch.from_numpy(trainer.windows.batch(i * spec["batch"], spec["batch"]))[:, :-1] for i in range(4)
    ]
    _, plain_step = plain_loop(trainer, batches)
    position = 0

    def runtime_step(i: int) -> None:
        nonlocal position
        trainer.step(i, position).item()
        position += spec["batch"]

    times: dict[str, list[float]] = {"runtime": [], "plain": []}
    cpu: dict[str, list[float]] = {"runtime": [], "plain": []}
    for fn in (runtime_step, plain_step, runtime_step, plain_step):  # warm up allocators and kernels
        fn(0)
    # Alternate single steps and take medians: bursts of load from other processes hit both loops.
    for i in range(rounds * spec["steps"]):
        order = (("runtime", runtime_step), ("plain", plain_step))
        for label, fn in order if i % 2 else order[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(i)
            times[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
    tokens = spec["batch"] * spec["seq"]
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}  # median step time
    ratio = tps["runtime"] / tps["plain"]
    # CPU seconds of the process per step: what each loop costs, whatever else the machine runs.
    cpu_ratio = statistics.median(cpu["plain"]) / statistics.median(cpu["runtime"])
    params = sum(p.numel() for p in trainer.model.parameters())
    label = name + (" compiled" if compile_layers else "")
    print(
        f"{label:27s} params={params / 1e6:7.1f}M batch={spec['batch']}x{spec['seq']} threads={threads} "
        f"runtime={tps['runtime']:8.1f} tok/s  plain={tps['plain']:8.1f} tok/s  ratio={ratio:.3f} "
        f"(CPU time ratio={cpu_ratio:.3f})",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=3, help="steps per loop = rounds x the config's steps")
    parser.add_argument("--only", choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, help="timed steps per round, instead of each config's own")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run the runtime with LLAMAOP_COMPILE=1 (minutes of compiling)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, fp32, {args.threads} threads, median step time of alternating steps")
    for name, spec in CONFIGS.items():
        if args.only in (None, name):
            spec = {**spec, "steps": args.steps or spec["steps"]}
            bench(name, spec, args.threads, args.rounds, compile_layers=False)
            if args.compile:
                bench(name, spec, args.threads, args.rounds, compile_layers=True)


if __name__ == "__main__":
    main()
