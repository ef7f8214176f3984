"""What a rank really holds, measured, for checking the planner's memory model against the runtime.

`state_bytes` adds up the local shards of weights, gradients and optimizer moments (what FSDP2 or the
XLA mesh leaves on one shard holder). `PeakTracker` measures one rank's peak bytes by category while it
runs a step: torch's FSDPMemTracker (torch.distributed._tools, a TorchDispatchMode that sees every
tensor's storage) works on any device, including CPU where torch.cuda's memory statistics do not exist;
the tracker keeps each category's own maximum as well as the breakdown at the peak of the total.
tests/runtime/test_memory.py compares both with `llama_operator.planning.llama`; serving measurements
reuse `PeakTracker` with a model and no optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from llama_runtime.backends import Backend

# FSDPMemTracker's categories (torch.distributed._tools.fsdp2_mem_tracker._FSDPRefType values) grouped as
# the planner's terms; MemTracker (no FSDP) uses "Parameter" and "Gradient" instead of the sharded names.
GROUPS: dict[str, tuple[str, ...]] = {
    "weights": ("Sharded Param", "Parameter"),
    "gradients": ("Sharded Grad", "Gradient"),
    "optimizer": ("OptState", "Optstate"),
    "gathered": ("Unsharded Param", "Unsharded Grad", "All Gather", "Reduce Scatter"),
    "activations": ("Activation", "Temp"),
}


@dataclass(frozen=True)
class StateBytes:
    weights: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, backend: Backend) -> StateBytes:
    """This shard holder's weights, gradients (fp32, the weights' shards) and AdamW moments."""
    weights = moments = 0
    for param in model.parameters():
        weights += backend.local_nbytes(param)
        for value in optimizer.state.get(param, {}).values():
            if value.ndim:  # skip the scalar step count
                moments += backend.local_nbytes(value)
    return StateBytes(weights, weights, moments)


@dataclass
class Peak:
    """One rank's peak bytes: `total` at its highest, `at_peak` the categories then, `each` every
    category's own maximum over the run, `groups` each of GROUPS' highest sum at one moment."""

    total: int = 0
    at_peak: dict[str, int] = field(default_factory=dict)
    each: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def group(self, name: str) -> int:
        return self.groups.get(name, 0)

    def record(self, categories: dict[str, int]) -> None:
        total = categories.get("Total", 0)
        named = {k: v for k, v in categories.items() if k != "Total"}
        if total > self.total:
            self.total, self.at_peak = total, named
        for name, value in named.items():
            self.each[name] = max(self.each.get(name, 0), value)
        for group, members in GROUPS.items():
            held = sum(named.get(m, 0) for m in members)
            self.groups[group] = max(self.groups.get(group, 0), held)


class PeakTracker:
    """`with PeakTracker(model, optimizer) as t: step()`, then `t.peak`: what the step held at most."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
        from torch.distributed._tools.mem_tracker import MemTracker
        from torch.distributed.fsdp import FSDPModule

        self.peak = Peak()
        peak = self.peak

        def record(snapshot: dict[Any, dict[Any, int]]) -> None:
            for categories in snapshot.values():  # one device per rank here
                peak.record({str(getattr(k, "value", k)): v for k, v in categories.items()})

        base: type[Any] = FSDPMemTracker if isinstance(model, FSDPModule) else MemTracker

        class Tracker(base):  # type: ignore[misc, valid-type]
            def _update_peak_stats(self, peak_state: Any) -> None:
                super()._update_peak_stats(peak_state)
                record(self._curr_mem_snap)

        if base is FSDPMemTracker:
            self._tracker = Tracker(model, optimizer)
        else:
            self._tracker = Tracker()
            self._tracker.track_external(*(m for m in (model, optimizer) if m is not None))

    def __enter__(self) -> PeakTracker:
        self._tracker.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tracker.__exit__(kind, exc, tb)
