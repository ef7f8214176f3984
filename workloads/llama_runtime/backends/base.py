"""The Backend interface and the eager implementation shared by cpu, cuda and the native neuron device.

The training loop only asks a backend for: a device, a process group, how to shard the model, an
autocast context, the optimizer step, the step boundary and how to bring tensors to the host to save.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from llama_runtime.capabilities import Line, Sharding, ShardUnit


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_env(cls) -> DistInfo:
        """torchrun's variables; a plain `python -m llama_runtime` is a world of one."""
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


class Backend:
    """Eager PyTorch on one device type, FSDP2 across ranks. Subclasses set the device and collectives.

    `line`, `sharding` and `shard_unit` are what this class really does; capabilities.CAPABILITIES
    states the same for the planner, and tests/unit/test_capabilities.py keeps the two equal.
    """

    name = "cpu"
    line: Line = "cpu"
    sharding: Sharding = "full"
    shard_unit: ShardUnit = "process"
    device_type = "cpu"
    dist_backend = "gloo"
    default_precision = "fp32"
    compiler: str | None = "inductor"
    attention = "sdpa"

    def __init__(self) -> None:
        self.dist = DistInfo.from_env()

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_type)

    @property
    def sharded(self) -> bool:
        """The state is DTensor-sharded across torchrun ranks (each rank saves its own rows)."""
        return self.dist.world > 1

    @property
    def data_parallel(self) -> int:
        """Holders of one micro batch each across the job: the ranks here, the mesh's devices on XLA."""
        return self.dist.world

    @property
    def local_members(self) -> int:
        """How many of those this process drives (it reads that many micro batches per forward)."""
        return 1

    def shard_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's sequences as the device wants them (XLA marks them split over the mesh)."""
        return batch

    def recompute(self, fn: object, *args: torch.Tensor) -> torch.Tensor:
        """Activation checkpointing of one call (the chunked loss): recompute `fn` in backward."""
        return checkpoint(fn, *args, use_reentrant=False)  # type: ignore[arg-type]

    def layout(self, tensor: torch.Tensor) -> str:
        """How `tensor` is laid out over the shard holders, for the logs (FSDP2: "S(0)")."""
        placements = getattr(tensor, "placements", None)
        return ",".join(map(str, placements)) if placements else "whole"

    def shard_like(self, tensor: torch.Tensor, param: torch.Tensor) -> None:
        """Give optimizer state created for `param` the same sharding (FSDP2's zeros_like already has)."""

    def local_nbytes(self, tensor: torch.Tensor) -> int:
        """Bytes of `tensor` one shard holder keeps (its local rows under FSDP2)."""
        from llama_runtime.weights import local_rows

        local = local_rows(tensor)[0]
        return local.numel() * local.element_size()

    def init(self) -> None:
        if self.dist.world > 1 and not dist.is_initialized():
            dist.init_process_group(self.dist_backend, timeout=timedelta(minutes=30))

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def shard(self, model: nn.Module, precision: str) -> nn.Module:
        """FSDP2: one group per decoder layer, the root keeps embeddings, final norm and (tied) head."""
        if not self.sharded:
            return model
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16 compute and communication of parameters; fp32 master weights, gradients reduced in fp32.
        mp = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if precision == "bf16" else None,
            reduce_dtype=torch.float32,
        )
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model

    def place(self, model: nn.Module) -> nn.Module:
        """Weights are materialized directly on the device (to_empty), so nothing moves here."""
        return model

    @property
    def materialize_device(self) -> torch.device:
        return self.device

    @contextlib.contextmanager
    def autocast(self, precision: str) -> Iterator[None]:
        # Sharded models already compute in bf16 through FSDP's mixed-precision policy.
        if precision == "bf16" and not self.sharded:
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float
    ) -> None:
        fused = bool(optimizer.defaults.get("fused"))
        if max_norm > 0 and fused:
            # Clipping folded into the fused kernel: it divides each gradient by `grad_scale` in its own pass
            # (the hook GradScaler uses), which spares clip_grad_norm_'s own pass over every gradient
            # (~3% of a 155M-parameter CPU step). Same result: clip_grad_norm_ multiplies by
            # min(1, max_norm / (norm + 1e-6)).
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads, foreach=True)
            optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)  # type: ignore[attr-defined]
        elif max_norm > 0:
            foreach = True if self.device_type in ("cpu", "cuda") else None  # others: torch's own choice
            torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
        try:
            optimizer.step()
        finally:
            if fused:
                optimizer.grad_scale = None  # type: ignore[attr-defined]

    def step_boundary(self) -> None:
        """Where a lazy backend cuts and runs its graph; eager backends have nothing to do."""

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.dist.world > 1:
            value = value.detach().clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.dist.world
        return value

    def barrier(self) -> None:
        if self.dist.world > 1:
            dist.barrier()

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu")

    def synchronize(self) -> None:
        """Waits for queued device work, so timings measure it."""

    def compile(self, model: nn.Module) -> nn.Module:
        if self.compiler is None:
            return model
        for layer in model.model.layers:
            layer.compile(backend=self.compiler)
        return model


class CpuBackend(Backend):
    pass


class CudaBackend(Backend):
    name = "cuda"
    line: Line = "cuda"
    device_type = "cuda"
    dist_backend = "nccl"
    default_precision = "bf16"

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.dist.local_rank)

    def init(self) -> None:
        torch.cuda.set_device(self.device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        super().init()

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class NeuronNativeBackend(Backend):
    """TorchNeuron (SDK 2.33+): a PrivateUse1 `neuron` device with eager mode, FSDP2 and its own compiler."""

    name = "neuron"
    line: Line = "neuron-native"
    device_type = "neuron"
    dist_backend = "neuron"
    default_precision = "bf16"
    compiler = "neuron"

    @property
    def device(self) -> torch.device:
        return torch.device("neuron", self.dist.local_rank)

    def synchronize(self) -> None:
        torch.accelerator.synchronize(self.device)
