"""The one training loop for every backend: the backend supplies device, sharding, autocast, the
optimizer step, the step boundary and the host copies for checkpoints; everything else is shared."""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from llama_runtime import checkpoint
from llama_runtime.backends import Backend, select_backend
from llama_runtime.config import RunConfig
from llama_runtime.dataset import TokenWindows, corpus_files, tokenize_corpus
from llama_runtime.errors import UserError
from llama_runtime.log import Logger, make_logger
from llama_runtime.loss import LlamaForTraining
from llama_runtime.memory import state_bytes
from llama_runtime.metrics import TrainMetrics
from llama_runtime.model import build_model, llama_config
from llama_runtime.progress import Measured, PodAnnotator, Progress, ProgressReporter, eta
from llama_runtime.tokenizer import load_tokenizer
from llama_runtime.weights import SeededInit, hf_reader, materialize


@dataclass(frozen=True)
class BatchPlan:
    micro: int  # sequences per rank (per XLA mesh device) per forward
    accumulation: int  # forwards per optimizer step

    @classmethod
    def of(cls, batch_size: int, micro_batch: int, world: int) -> BatchPlan:
        if batch_size % world:
            raise UserError(f"batch size {batch_size} is not a multiple of the {world} ranks")
        per_rank = batch_size // world
        micro = micro_batch or per_rank
        if per_rank % micro:
            raise UserError(f"micro batch {micro} does not divide the {per_rank} sequences per rank")
        return cls(micro, per_rank // micro)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: nn.Module, lr: float, backend: Backend) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # norms: decaying them only hurts
    # Fused AdamW (cpu and cuda kernels) is several times faster than the per-tensor loop; not for DTensors.
    fused = backend.device_type in ("cpu", "cuda") and not backend.sharded
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused or None)


class Trainer:
    """Builds model, data and optimizer (fresh or from the latest checkpoint) and runs the steps."""

    def __init__(self, cfg: RunConfig, backend: Backend, log: Logger) -> None:
        self.cfg, self.backend, self.log = cfg, backend, log
        world = backend.dist.world
        self.plan = BatchPlan.of(cfg.batch_size, cfg.micro_batch, backend.data_parallel)
        self.precision = cfg.precision or backend.default_precision
        config = llama_config(cfg.model, cfg.model_dir, backend.attention)
        if cfg.seq_len > config.max_position_embeddings:
            raise UserError(
                f"seq len {cfg.seq_len} exceeds the model's {config.max_position_embeddings} positions"
            )
        tokenizer = load_tokenizer(cfg.model_dir)
        if tokenizer.vocab_size > config.vocab_size:
            raise UserError(
                f"the tokenizer has {tokenizer.vocab_size} ids, the model only {config.vocab_size}"
            )
        self.windows = TokenWindows(
            tokenize_corpus(corpus_files(cfg.data_dir), tokenizer), cfg.seq_len, cfg.seed
        )

        found = checkpoint.latest(cfg.checkpoint_dir)
        self.ckpt = checkpoint.Checkpoint(found) if found else None
        model = build_model(config, "meta", LlamaForTraining)
        model.recompute = backend.recompute
        if cfg.activation_checkpointing:
            # The backend's recompute: torch.utils.checkpoint fails on XLA tensors (it looks up a
            # `torch.xla` device module), torch_xla's own variant does not.
            model._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=backend.recompute)
        model = backend.shard(model, self.precision)
        if self.ckpt is not None:
            with self.ckpt.reader("model") as source:
                materialize(model, backend.materialize_device, source)
        elif cfg.model_dir is not None:
            with hf_reader(cfg.model_dir) as source:
                materialize(model, backend.materialize_device, source)
        else:
            materialize(model, backend.materialize_device, SeededInit(config, cfg.seed))
        self.model = backend.place(model)
        self.model.train()
        self.optimizer = make_optimizer(self.model, cfg.learning_rate, backend)
        self.state = checkpoint.TrainState(0, 0, 0)
        if self.ckpt is not None:
            checkpoint.load_optimizer(self.ckpt, self.model, self.optimizer, backend)
            self.state = self.ckpt.state
            rng = self.ckpt.rng_state(backend.dist.rank, world)
            if rng is not None:
                torch.set_rng_state(rng)
        else:
            torch.manual_seed(cfg.seed + backend.dist.rank)
        compile_default = backend.device_type == "cuda"
        if cfg.compile if cfg.compile is not None else compile_default:
            self.model = backend.compile(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, max(1, cfg.steps // 10))

    def _micro_batch(self, position: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        d, micro, local = self.backend.dist, self.plan.micro, self.backend.local_members
        first = position + (j * d.world + d.rank) * micro * local
        batch = torch.from_numpy(self.windows.batch(first, micro * local)).to(self.backend.device)
        batch = self.backend.shard_batch(batch)
        return batch[:, :-1], batch[:, 1:]

    def step(self, step: int, position: int) -> torch.Tensor:
        """One optimizer step over the global batch starting at `position`; returns this rank's mean loss."""
        lr = learning_rate(step, self.cfg.steps, self.cfg.learning_rate, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.backend.device)
        for j in range(self.plan.accumulation):
            inputs, labels = self._micro_batch(position, j)
            with self.backend.autocast(self.precision):
                loss = self.model(input_ids=inputs, labels=labels)  # chunked: never the full logits
            (loss / self.plan.accumulation).backward()
            total += loss.detach()
        self.backend.optimizer_step(self.optimizer, self.params, self.cfg.max_grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.backend.step_boundary()
        return total / self.plan.accumulation

    def save(self) -> None:
        assert self.cfg.checkpoint_dir is not None
        t0 = time.monotonic()
        path = checkpoint.save(
            self.cfg.checkpoint_dir,
            self.state,
            self.model,
            self.optimizer,
            self.backend,
            {"model": self.cfg.model, "seq_len": self.cfg.seq_len, "batch_size": self.cfg.batch_size},
            self.cfg.checkpoint_keep,
        )
        if self.backend.dist.rank == 0:
            self.log.info(
                "checkpoint saved", path=str(path), step=self.state.step, seconds=time.monotonic() - t0
            )

    def run(
        self, metrics: TrainMetrics | None, reporter: ProgressReporter, started: float | None = None
    ) -> dict[str, Any]:
        """`started`: Unix time start-up is counted from (the launcher's start; default: now)."""
        cfg, rank = self.cfg, self.backend.dist.rank
        tokens_per_step = cfg.batch_size * cfg.seq_len
        if self.ckpt is not None and rank == 0:
            s = self.state
            self.log.info(
                "resumed", checkpoint=str(self.ckpt.path), step=s.step, data_position=s.data_position
            )
        if metrics is not None:
            metrics.total_steps.set(cfg.steps)
            metrics.step.set(self.state.step)
        durations: deque[float] = deque(maxlen=20)
        losses: list[float] = []
        progress: Progress | None = None
        # The first measure_after steps of this process (compilation, warm-up) are timed apart.
        startup = time.time() - (started if started is not None else time.time())
        warmup = timed = 0.0
        for step in range(self.state.step, cfg.steps):
            t0 = time.perf_counter()
            loss_t = self.backend.mean_across_ranks(self.step(step, self.state.data_position))
            loss = float(loss_t.item())  # waits for the step, so the timing below is real
            elapsed = time.perf_counter() - t0
            if not math.isfinite(loss):
                raise RuntimeError(f"loss is {loss} at step {step + 1}")
            self.state = checkpoint.TrainState(
                step + 1, self.state.data_position + cfg.batch_size, self.state.tokens_seen + tokens_per_step
            )
            losses.append(loss)
            if len(losses) == 1 and rank == 0:  # optimizer state exists now: what this rank really holds
                held = state_bytes(self.model, self.optimizer, self.backend)
                first = next(iter(self.model.parameters()))
                self.log.info("memory", state_bytes=held.total, layout=self.backend.layout(first))
            # This process's first step includes compilation and allocator warmup: keep it out of the rate.
            if len(losses) > 1:
                durations.append(elapsed)
            per_step = float(np.mean(durations)) if durations else elapsed
            tps = tokens_per_step / per_step
            if len(losses) <= cfg.measure_after:
                warmup += elapsed
            else:
                timed += elapsed
            skipped = min(len(losses), cfg.measure_after)
            measured = Measured(
                startup, skipped, warmup, len(losses) - skipped, timed, tokens_per_step
            )  # fmt: skip
            progress = Progress(
                self.state.step, cfg.steps, loss, tps, eta(self.state.step, cfg.steps, per_step), measured
            )
            if rank == 0:
                self.log.info(
                    "progress",
                    step=self.state.step,
                    total_steps=cfg.steps,
                    loss=round(loss, 5),
                    lr=float(f"{learning_rate(step, cfg.steps, cfg.learning_rate, self.warmup):.4g}"),
                    tokens_per_second=round(tps, 1),
                    step_seconds=round(elapsed, 4),
                    eta_seconds=None if progress.eta_seconds is None else round(progress.eta_seconds, 1),
                    data_position=self.state.data_position,
                )
                reporter.report(progress)
                if metrics is not None:
                    metrics.step.set(self.state.step)
                    metrics.loss.set(loss)
                    metrics.tokens_per_second.set(tps)
                    metrics.eta.set(progress.eta_seconds or 0)
                    metrics.tokens.inc(tokens_per_step)
                    metrics.step_seconds.observe(elapsed)
            due = cfg.checkpoint_every and self.state.step % cfg.checkpoint_every == 0
            if cfg.checkpoint_dir is not None and (due or self.state.step == cfg.steps):
                self.save()
                if metrics is not None:
                    metrics.checkpoints.inc()
        if progress is not None:
            reporter.report(progress)
            if rank == 0 and progress.measured is not None:
                self.log.info("measured", **progress.measured.fields())
        return {"step": self.state.step, "losses": losses, "progress": progress}


def run(cfg: RunConfig) -> None:
    started = cfg.launched_at if cfg.launched_at is not None else time.time()
    backend = select_backend(cfg.backend)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    backend.init()
    rank = backend.dist.rank
    log = make_logger(cfg.log_level, rank=rank, job=cfg.job_name or None)
    metrics = TrainMetrics() if rank == 0 else None
    reporter = ProgressReporter(
        PodAnnotator.in_cluster(os.environ) if rank == 0 else None, cfg.progress_interval, log
    )
    try:
        trainer = Trainer(cfg, backend, log)
        if rank == 0:
            assert metrics is not None
            metrics.serve(cfg.metrics_port)
            log.info(
                "training",
                backend=backend.name,
                device=str(backend.device),
                world=backend.dist.world,
                model=cfg.model if cfg.model_dir is None else str(cfg.model_dir),
                parameters=sum(p.numel() for p in trainer.params),
                precision=trainer.precision,
                micro_batch=trainer.plan.micro,
                accumulation=trainer.plan.accumulation,
                activation_checkpointing=cfg.activation_checkpointing,
            )
        result = trainer.run(metrics, reporter, started)
        if rank == 0:
            log.info(
                "done", step=result["step"], final_loss=result["losses"][-1] if result["losses"] else None
            )
    finally:
        reporter.close()
        backend.close()
