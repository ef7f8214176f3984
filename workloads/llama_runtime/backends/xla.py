"""torch-neuronx on torch-xla (the XLA line, torch 2.9 / Neuron SDK 2.30), also runnable on PJRT_DEVICE=CPU.

Fully sharded with torch-xla's SPMD FSDPv2: one process sees every device of its pod (NeuronCores; the
CPU_NUM_DEVICES virtual devices in tests) as one 1-D `fsdp` mesh. Each decoder layer and the root are
wrapped in SpmdFullyShardedDataParallel, which marks every parameter sharded over the mesh (its
largest dimension); gradients and AdamW's moments follow by sharding propagation, and the compiler
inserts the all-gathers and reduce-scatters. Each micro batch is the process's sequences for all mesh
devices, marked split along the batch. The lazy graph is cut once per optimizer step.
References: pytorch.org/xla perf/spmd_basic ("xr.use_spmd()", Mesh) and
torch_xla/experimental/spmd_fully_sharded_data_parallel.py.

A multi-host mesh (one process per node) is not implemented: every host would have to feed its shard of
the global batch and checkpoints would need non-addressable shards. The capability row says so
(max_nodes=1) and init() refuses a torchrun world above one.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from llama_runtime.backends.base import Backend
from llama_runtime.capabilities import Line, ShardUnit
from llama_runtime.errors import UserError


class XlaBackend(Backend):
    name = "xla"
    line: Line = "neuron-xla"
    shard_unit: ShardUnit = "xla-device"
    device_type = "xla"
    dist_backend = "xla"
    default_precision = "bf16"
    compiler = None  # XLA already compiles the whole step graph
    # XLA's autocast does not cast scaled_dot_product_attention's inputs (bf16 v, fp32 rotary q/k fail);
    # HF's eager attention is plain matmuls that autocast handles, and XLA decomposes sdpa into those anyway.
    attention = "eager"

    def __init__(self) -> None:
        super().__init__()
        import numpy as np
        import torch_xla
        import torch_xla.core.xla_model as xm
        import torch_xla.distributed.spmd as xs
        import torch_xla.runtime as xr

        self._torch_xla, self._xm, self._xs = torch_xla, xm, xs
        xr.use_spmd()  # before any XLA tensor exists: one virtual device over the whole mesh
        self.devices = xr.global_runtime_device_count()
        self.mesh = xs.Mesh(np.arange(self.devices), (self.devices,), ("fsdp",))

    @property
    def device(self) -> torch.device:
        return self._torch_xla.device()

    @property
    def sharded(self) -> bool:
        return False  # SPMD shards inside one process; `.cpu()` gathers, so one writer saves full tensors

    @property
    def data_parallel(self) -> int:
        return self.devices

    @property
    def local_members(self) -> int:
        return self.devices

    @property
    def materialize_device(self) -> torch.device:
        # Filling rows of XLA tensors one by one would trace a graph per row: build on the host, then move.
        return torch.device("cpu")

    def init(self) -> None:
        if self.dist.world > 1:
            raise UserError(
                f"torchrun started {self.dist.world} processes but the XLA line trains in one process per "
                f"job, SPMD over the {self.devices} devices it sees (multi-host SPMD is not implemented)"
            )

    def shard(self, model: nn.Module, precision: str) -> nn.Module:
        return model  # sharding is marked once the model is on the device (place)

    def place(self, model: nn.Module) -> nn.Module:
        from torch_xla.experimental.spmd_fully_sharded_data_parallel import (
            SpmdFullyShardedDataParallel as FSDPv2,
        )

        model.to(self.device)
        if model.config.tie_word_embeddings:
            model.tie_weights()  # .to() on XLA may give the tied head its own copy
        layers = model.model.layers
        for i, layer in enumerate(layers):
            # The default shard_output marks each layer's hidden states split along the batch.
            layers[i] = FSDPv2(layer, mesh=self.mesh)
        return FSDPv2(model, mesh=self.mesh, shard_output=self._shard_output)

    def _shard_output(self, output: Any, mesh: Any) -> None:
        # The training forward returns the scalar loss (replicated); a generation forward HF's output.
        logits = getattr(output, "logits", None)
        if logits is not None:
            self._xs.mark_sharding(logits, mesh, ("fsdp", None, None))

    def shard_like(self, tensor: torch.Tensor, param: torch.Tensor) -> None:
        # FSDPv2 shards a parameter's largest dimension; state loaded from a checkpoint starts whole.
        spec: list[str | None] = [None] * param.ndim
        if spec:
            spec[list(param.shape).index(max(param.shape))] = "fsdp"
        self._xs.mark_sharding(tensor, self.mesh, tuple(spec))

    def shard_batch(self, batch: torch.Tensor) -> torch.Tensor:
        self._xs.mark_sharding(batch, self.mesh, ("fsdp", None))
        return batch

    def recompute(self, fn: object, *args: torch.Tensor) -> torch.Tensor:
        # torch.utils.checkpoint's recomputation would be merged back into the forward by XLA's CSE;
        # torch_xla's variant puts an optimization barrier around it.
        import torch_xla.utils.checkpoint as xla_checkpoint

        return xla_checkpoint.checkpoint(fn, *args)  # type: ignore[no-any-return]  (reentrant only)

    def local_nbytes(self, tensor: torch.Tensor) -> int:
        """The largest shard's bytes, from the annotation's tile counts (no copy to the host)."""
        tiles = re.search(r"devices=\[([\d,]+)\]", self.sharding_spec(tensor))
        counts = [int(c) for c in tiles.group(1).split(",")] if tiles else []
        shape = [-(-dim // count) for dim, count in zip(tensor.shape, counts, strict=False)]
        shape += list(tensor.shape[len(shape) :])
        return math.prod(shape) * tensor.element_size()

    def sharding_spec(self, tensor: torch.Tensor) -> str:
        """The XLA sharding annotation, e.g. {devices=[4,1]0,1,2,3}."""
        return str(self._torch_xla._XLAC._get_xla_sharding_spec(tensor))

    def layout(self, tensor: torch.Tensor) -> str:
        return self.sharding_spec(tensor) or "whole"

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float
    ) -> None:
        # One SPMD program: the compiler already reduced the gradients over the mesh.
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()

    def step_boundary(self) -> None:
        self._torch_xla.sync()

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        return value  # the loss of the whole global batch already

    def barrier(self) -> None:
        pass  # one process

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu")

    def synchronize(self) -> None:
        self._xm.wait_device_ops()
