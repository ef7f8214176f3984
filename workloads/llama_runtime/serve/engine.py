"""Batched generation: concurrent requests are gathered into one batch that shares a KV cache.

One engine thread owns the model. It waits for a request, gathers whatever else arrives within a few
milliseconds (up to max_batch), prefills the left-padded prompts together and decodes them together;
finished sequences are dropped from the batch and the cache so the rest decode at full speed.

A tensor-parallel replica runs this engine on every rank: rank 0's thread gathers the batch and shares
it (serve/group.py), the other ranks `follow`, and every step uses the tokens rank 0 picked.
"""

from __future__ import annotations

import inspect
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from llama_runtime.metrics import ServeMetrics
from llama_runtime.serve.group import HEARTBEAT_SECONDS, IDLE, STOP, Group, request_fields
from llama_runtime.tokenizer import Tokenizer

# A failed batch leaves a tensor-parallel group's ranks at different steps; the pod restarts them all.
EXIT_GROUP_BROKEN = 3


@dataclass
class Request:
    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    future: Future[Completion] = field(default_factory=Future)


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str  # stop | length


def _cache_kwarg(model: nn.Module) -> str:
    """transformers 5.x renamed past_key_values to cache; accept either generation."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class Engine:
    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        device: torch.device,
        max_batch: int,
        metrics: ServeMetrics,
        gather_seconds: float = 0.005,
        group: Group | None = None,
    ) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_batch, self.metrics, self.gather_seconds = max_batch, metrics, gather_seconds
        self.group = group
        self.max_positions = int(model.config.max_position_embeddings)
        self._cache_kw = _cache_kwarg(model)
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if group is None or group.leader:
            self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
            self._thread.start()

    def submit(self, request: Request) -> Future[Completion]:
        self._queue.put(request)
        self.metrics.queue.set(self._queue.qsize())
        return request.future

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)

    def follow(self) -> None:
        """A follower rank: run every batch rank 0 shares until it says stop."""
        assert self.group is not None and not self.group.leader
        while True:
            message = self.group.share()
            if message == STOP:
                return
            if message != IDLE:
                self.generate([Request(**fields) for fields in message])

    def _next(self) -> Request | None:
        """The next request; in a group, heartbeats to the followers while none comes."""
        if self.group is None:
            return self._queue.get()
        while True:
            try:
                return self._queue.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                self.group.share(IDLE)

    def _loop(self) -> None:
        while True:
            first = self._next()
            if first is None:
                if self.group is not None:
                    self.group.share(STOP)
                return
            batch = [first]
            deadline = time.monotonic() + self.gather_seconds
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self.metrics.queue.set(self._queue.qsize())
            try:
                if self.group is not None:
                    self.group.share([request_fields(r) for r in batch])
                results = self.generate(batch)
            except Exception as e:  # one bad batch must not take the server down
                for r in batch:
                    r.future.set_exception(e)
                if self.group is not None:
                    message = f"a batch failed on rank 0 ({e!r}); the tensor-parallel group restarts"
                    print(f"llama_runtime: error: {message}", file=sys.stderr, flush=True)
                    os._exit(EXIT_GROUP_BROKEN)
                continue
            for r, result in zip(batch, results, strict=True):
                r.future.set_result(result)

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        kwargs = {self._cache_kw: cache}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def _sample(
        self, logits: torch.Tensor, requests: list[Request], gens: list[torch.Generator]
    ) -> list[int]:
        picks = []
        for row, r, gen in zip(logits, requests, gens, strict=True):
            if r.temperature <= 0:
                picks.append(int(row.argmax()))
                continue
            probs = torch.softmax(row / r.temperature, dim=-1).cpu()
            if r.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(0) - sorted_p < r.top_p
                probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
            picks.append(int(torch.multinomial(probs, 1, generator=gen)))
        return picks

    @torch.inference_mode()
    def generate(self, requests: list[Request]) -> list[Completion]:
        t0 = time.perf_counter()
        self.metrics.batch_size.observe(len(requests))
        prompts = [r.prompt[-(self.max_positions - 1) :] or [self.tokenizer.eos_id] for r in requests]
        limits = [
            min(r.max_tokens, self.max_positions - len(p)) for r, p in zip(requests, prompts, strict=True)
        ]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.eos_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        gens = [
            torch.Generator().manual_seed(r.seed if r.seed is not None else int(time.time_ns()))
            for r in requests
        ]
        outputs: list[list[int]] = [[] for _ in requests]
        finish = ["length"] * len(requests)
        active = list(range(len(requests)))  # request index of each row still in the batch
        logits = self._forward(ids, mask, pos, cache)
        next_pos = pos[:, -1:] + 1
        while active:
            if self.group is None or self.group.leader:
                picks = self._sample(logits, [requests[i] for i in active], [gens[i] for i in active])
            else:
                picks = [0] * len(active)
            if self.group is not None:
                picks = self.group.tokens(picks)
            keep_rows = []
            for row, (i, token) in enumerate(zip(active, picks, strict=True)):
                if token == self.tokenizer.eos_id:
                    finish[i] = "stop"
                    continue
                outputs[i].append(token)
                if requests[i].stop and self._hit_stop(outputs[i], requests[i].stop):
                    finish[i] = "stop"
                elif len(outputs[i]) < limits[i]:
                    keep_rows.append(row)
            if not keep_rows:
                break
            if len(keep_rows) < len(active):
                index = torch.tensor(keep_rows, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                picks = [picks[r] for r in keep_rows]
                active = [active[r] for r in keep_rows]
            ids = torch.tensor(picks, device=self.device)[:, None]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            logits = self._forward(ids, mask, next_pos, cache)
            next_pos = next_pos + 1
        results = []
        for r, p, out, why in zip(requests, prompts, outputs, finish, strict=True):
            text = self.tokenizer.decode(out)
            if r.stop:
                cut = min((text.find(s) for s in r.stop if s in text), default=-1)
                text = text[:cut] if cut >= 0 else text
            results.append(Completion(text, out, len(p), why))
        generated = sum(len(o) for o in outputs)
        self.metrics.prompt_tokens.inc(sum(len(p) for p in prompts))
        self.metrics.generated_tokens.inc(generated)
        self.metrics.tokens_per_second.set(generated / max(1e-9, time.perf_counter() - t0))
        return results

    def _hit_stop(self, tokens: list[int], stops: list[str]) -> bool:
        tail = self.tokenizer.decode(tokens[-32:])
        return any(s in tail for s in stops)
