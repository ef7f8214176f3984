"""Backend selection: LLAMAOP_BACKEND names one; `auto` takes what the machine has."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from llama_runtime.backends.base import Backend, CpuBackend, CudaBackend, DistInfo, NeuronNativeBackend
from llama_runtime.capabilities import Line
from llama_runtime.errors import UserError

NAMES = ("auto", "cpu", "cuda", "neuron", "xla")

__all__ = ["NAMES", "Backend", "DistInfo", "backend_class", "detect", "select_backend"]


def backend_class(line: Line) -> type[Backend]:
    """The class that runs a capability line (importing it needs torch, not torch-xla)."""
    if line == "neuron-xla":
        from llama_runtime.backends.xla import XlaBackend

        return XlaBackend
    classes: dict[str, type[Backend]] = {
        "cpu": CpuBackend,
        "cuda": CudaBackend,
        "neuron-native": NeuronNativeBackend,
    }
    return classes[line]


def _neuron_native() -> bool:
    """TorchNeuron registers `neuron` as torch's PrivateUse1 device (SDK 2.33+)."""
    import torch

    return torch._C._get_privateuse1_backend_name() == "neuron" or hasattr(torch, "neuron")


def _has_neuron_devices() -> bool:
    return any(Path("/dev").glob("neuron[0-9]*"))


def detect() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if _has_neuron_devices() and (_neuron_native() or importlib.util.find_spec("torch_xla")):
        return "neuron"
    return "cpu"


def select_backend(name: str) -> Backend:
    """The backend for `name`; `neuron` means the native device where installed, else torch-neuronx on XLA."""
    import torch

    if name == "auto":
        name = detect()
    if name == "cpu":
        return CpuBackend()
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("backend cuda requested but torch sees no CUDA device")
        return CudaBackend()
    if name == "neuron":
        if _neuron_native():
            return NeuronNativeBackend()
        if importlib.util.find_spec("torch_xla") is None:
            raise UserError("backend neuron requested but neither torch-neuronx nor torch-xla is installed")
        os.environ.setdefault("PJRT_DEVICE", "NEURON")
        return _xla("neuron")
    if name == "xla":  # the XLA path on whatever PJRT_DEVICE says (CPU in tests)
        if importlib.util.find_spec("torch_xla") is None:
            raise UserError("backend xla requested but torch-xla is not installed")
        return _xla("xla")
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")


def _xla(name: str) -> Backend:
    from llama_runtime.backends.xla import XlaBackend

    backend = XlaBackend()
    backend.name = name
    return backend
