"""The engine's working copy of free devices per node of one pool."""

from __future__ import annotations

from llama_operator.planning.estimate import Option


class Slots:
    """Free devices per node of one pool, updated as the engine places jobs."""

    __slots__ = ("free", "most", "total")

    def __init__(self, free: dict[str, int]) -> None:
        self.free = free
        self.total = sum(free.values())
        self.most = max(free.values(), default=0)

    def room(self, option: Option, training: bool) -> bool:
        d = option.devices_per_node
        if d > self.most:  # the common case once a pool fills up: no node has that many free
            return False
        if training:
            return sum(1 for f in self.free.values() if f >= d) >= option.pods
        return sum(f // d for f in self.free.values()) >= option.pods

    def take(self, option: Option, training: bool) -> tuple[str, ...]:
        """Best fit: the fullest nodes that still fit. Inference replicas go round-robin over those nodes."""
        d = option.devices_per_node
        order = sorted((f, name) for name, f in self.free.items() if f >= d)
        chosen: list[str] = []
        if training:
            chosen = [name for _, name in order[: option.pods]]
        else:
            left = {name: f for f, name in order}
            while len(chosen) < option.pods:
                before = len(chosen)
                for _, name in order:
                    if left[name] >= d and len(chosen) < option.pods:
                        left[name] -= d
                        chosen.append(name)
                if len(chosen) == before:
                    raise RuntimeError(f"no room for {option.pods} replicas although room() said so")
        for name in chosen:
            self.free[name] -= d
        self.total -= d * len(chosen)
        self.most = max(self.free.values(), default=0)
        return tuple(chosen)
