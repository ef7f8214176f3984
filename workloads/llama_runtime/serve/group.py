"""The ranks of one tensor-parallel replica: rank 0 serves HTTP and decides, the others follow.

Every rank must run the same forward passes in the same order, or the collectives inside them pair up
wrongly and hang. So rank 0 broadcasts each batch before generating it and the token it picked at each
step (followers never sample: one rank's choice, applied everywhere, keeps the ranks in step even if
their logits differed in the last bit). Between requests rank 0 sends a heartbeat well inside the
process group's timeout, so an idle replica does not time out.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

IDLE: Final = "idle"
STOP: Final = "stop"
HEARTBEAT_SECONDS: Final = 60.0


class Group:
    def __init__(self, rank: int, world: int, device: torch.device) -> None:
        self.rank, self.world, self.device = rank, world, device

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def mesh(self) -> DeviceMesh:
        return init_device_mesh(self.device.type, (self.world,))

    def barrier(self) -> None:
        dist.barrier()

    def share(self, message: Any = None) -> Any:
        """Rank 0's message (a batch of request fields, IDLE or STOP), as every rank receives it."""
        box = [message if self.leader else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type != "cpu" else None)
        return box[0]

    def tokens(self, picks: list[int]) -> list[int]:
        """Rank 0's picks for the rows still in the batch (the others pass placeholders of that length)."""
        values = torch.tensor(picks, dtype=torch.int64, device=self.device)
        dist.broadcast(values, src=0)
        return [int(v) for v in values.tolist()]


def request_fields(request: Any) -> dict[str, Any]:
    """What a follower needs to run the same batch (no future, no thread state)."""
    return {f.name: getattr(request, f.name) for f in fields(request) if f.name != "future"}
