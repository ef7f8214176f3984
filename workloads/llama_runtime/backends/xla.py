"""torch-neuronx on torch-xla (the XLA line, torch 2.9 / Neuron SDK 2.30), also runnable on PJRT_DEVICE=CPU.

Data parallel with replicated weights: gradients are all-reduced across the `xla` process group at the
optimizer step, as torch-neuronx's training guide does. The lazy graph is cut once per optimizer step.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from llama_runtime.backends.base import Backend
from llama_runtime.errors import UserError


class XlaBackend(Backend):
    name = "xla"
    device_type = "xla"
    dist_backend = "xla"
    default_precision = "bf16"
    compiler = None  # XLA already compiles the whole step graph
    # XLA's autocast does not cast scaled_dot_product_attention's inputs (bf16 v, fp32 rotary q/k fail);
    # HF's eager attention is plain matmuls that autocast handles, and XLA decomposes sdpa into those anyway.
    attention = "eager"

    def __init__(self) -> None:
        super().__init__()
        import torch_xla
        import torch_xla.core.xla_model as xm

        self._torch_xla = torch_xla
        self._xm = xm

    @property
    def device(self) -> torch.device:
        return self._torch_xla.device()

    @property
    def sharded(self) -> bool:
        return False

    @property
    def materialize_device(self) -> torch.device:
        # Filling rows of XLA tensors one by one would trace a graph per row: build on the host, then move.
        return torch.device("cpu")

    def init(self) -> None:
        if self.dist.world > 1 and not dist.is_initialized():
            import torch_xla.distributed.xla_backend  # noqa: F401  registers the "xla" process group

            dist.init_process_group("xla", init_method="xla://", timeout=timedelta(minutes=30))
            import torch_xla.runtime as xr

            # PJRT_DEVICE=CPU makes every process a world of its own: training would silently diverge.
            if xr.world_size() != self.dist.world:
                device = os.environ.get("PJRT_DEVICE")
                raise UserError(
                    f"torchrun started {self.dist.world} processes but the XLA runtime sees a world of "
                    f"{xr.world_size()} (PJRT_DEVICE={device} has no multi-process collectives)"
                )

    def shard(self, model: nn.Module, precision: str) -> nn.Module:
        return model

    def place(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if model.config.tie_word_embeddings:
            model.tie_weights()  # .to() on XLA may give the tied head its own copy
        return model

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float
    ) -> None:
        if max_norm > 0:
            # xm.optimizer_step would all-reduce and step at once; clipping needs the reduced gradients.
            self._xm.reduce_gradients(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
        else:
            self._xm.optimizer_step(optimizer)

    def step_boundary(self) -> None:
        self._torch_xla.sync()

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.dist.world > 1:
            return self._xm.all_reduce(self._xm.REDUCE_SUM, value.detach(), scale=1.0 / self.dist.world)
        return value

    def barrier(self) -> None:
        if self.dist.world > 1:
            self._xm.rendezvous("llama_runtime")

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu")

    def synchronize(self) -> None:
        self._xm.wait_device_ops()
