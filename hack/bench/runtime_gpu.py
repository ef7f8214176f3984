"""Training tokens/s and MFU of llama_runtime's training step on one GPU (run by hack/bench/gpu.sh).

Uses the runtime's own Trainer (cuda backend: bf16 autocast over fp32 master weights, fused AdamW,
gradient clipping) on the llama3-1b preset, eager and with per-layer torch.compile. MFU counts
6 * parameters + 12 * layers * hidden * seq FLOPs per token (PaLM's formula) against the card's dense
bf16 peak. `--backend cpu --model tiny --seq 128` smoke-tests the script without a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workloads"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from llama_runtime.backends import select_backend
from llama_runtime.config import parse
from llama_runtime.log import make_logger
from llama_runtime.train import Trainer

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets (SXM parts).
PEAKS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops() -> float | None:
    if os.environ.get("BENCH_PEAK_TFLOPS"):
        return float(os.environ["BENCH_PEAK_TFLOPS"]) * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), None)


def measure(args: argparse.Namespace, compile_model: bool) -> None:
    cli = ["train", "--backend", args.backend, "--model", args.model, "--seq-len", str(args.seq)]
    cli += ["--batch-size", str(args.batch), "--micro-batch", str(args.micro), "--steps", "100000"]
    cli += ["--metrics-port", "0", "--compile", "1" if compile_model else "0"]
    if args.activation_checkpointing:
        cli += ["--activation-checkpointing", "1"]
    backend = select_backend(args.backend)
    backend.init()
    t0 = time.perf_counter()
    trainer = Trainer(parse(cli, env={}), backend, make_logger("warning"))
    config = trainer.model.config
    params = sum(p.numel() for p in trainer.params)
    flops_per_token = 6 * params + 12 * config.num_hidden_layers * config.hidden_size * args.seq
    position = 0
    for i in range(args.warmup):  # includes compilation
        trainer.step(i, position).item()
        position += args.batch
    setup = time.perf_counter() - t0
    backend.synchronize()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = []
    for i in range(args.steps):
        losses.append(trainer.step(args.warmup + i, position))
        position += args.batch
    loss = float(losses[-1].item())
    backend.synchronize()
    elapsed = time.perf_counter() - t0
    tps = args.batch * args.seq * args.steps / elapsed
    peak = peak_flops()
    mfu = f"{100 * tps * flops_per_token / peak:5.1f}%" if peak else "n/a (unknown peak)"
    mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if torch.cuda.is_available() else "n/a"
    mode = "compiled" if compile_model else "eager"
    print(
        f"RESULT {mode:8s} model={args.model} params={params / 1e9:.3f}B batch={args.batch}x{args.seq} "
        f"(micro {args.micro}) step={elapsed / args.steps * 1000:.0f} ms tokens/s={tps:,.0f} MFU={mfu} "
        f"peak_mem={mem} loss={loss:.3f} setup+warmup={setup:.0f}s",
        flush=True,
    )
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--model", default="llama3-1b")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    parser.add_argument("--micro", type=int, default=4, help="sequences per forward")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--activation-checkpointing", action="store_true")
    args = parser.parse_args()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(
            f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}",
            flush=True,
        )
    for mode in args.modes.split(","):
        measure(args, compile_model=mode == "compiled")


if __name__ == "__main__":
    main()
