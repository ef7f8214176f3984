"""The engine's working copy of what each node of one pool has free, updated as the engine places jobs."""

from __future__ import annotations

from collections.abc import Mapping

from llama_operator.planning.estimate import Option

Need = tuple[tuple[str, int], ...]
"""What one pod requests besides its devices: (resource, amount > 0) pairs, planning.resources' units."""


class Slots:
    """Free devices per node of one pool and, where the node's allocatable is known, the free amount of
    every other resource (EFA, cpu, memory, pod slots). Devices are checked first: once a pool fills up
    no node has the devices a job asks for, and that one comparison answers; the other resources are
    checked only for the nodes that pass it, and only those the pod requests."""

    __slots__ = ("free", "host", "most", "total")

    def __init__(self, free: dict[str, int], host: dict[str, dict[str, int]] | None = None) -> None:
        self.free = free
        self.host = host or None
        """Node -> resource -> free amount. A node without an entry has no known limit but its devices."""
        self.total = sum(free.values())
        self.most = max(free.values(), default=0)

    def pods_on(self, name: str, devices: int, need: Need = ()) -> int:
        """How many pods of `devices` devices and `need` fit on node `name` now."""
        count = self.free[name] // devices
        if count and need and self.host is not None:
            host = self.host.get(name)
            if host is not None:
                for resource, amount in need:
                    count = min(count, host.get(resource, 0) // amount)
                    if not count:
                        break
        return count

    def room(self, option: Option, training: bool, need: Need = ()) -> bool:
        d = option.devices_per_node
        if d > self.most:  # the common case once a pool fills up: no node has that many free
            return False
        wanted = option.pods
        free = self.free
        # Devices alone first (one pass, no calls): only when they would do are the other resources read.
        if training:
            if sum(1 for f in free.values() if f >= d) < wanted:
                return False
        elif sum(f // d for f in free.values()) < wanted:
            return False
        host = self.host
        if not need or host is None:
            return True
        found = 0
        for name, f in free.items():
            if f < d:
                continue
            h = host.get(name)
            count = 1 if training else f // d
            if h is not None:
                for resource, amount in need:
                    fits = h.get(resource, 0) // amount
                    if fits < count:
                        count = fits
                        if not count:
                            break
            found += count
            if found >= wanted:
                return True
        return False

    def nodes_with_room(self, devices: int, need: Need = ()) -> int:
        """Nodes that can take one more such pod (what a training job needs one per rank of)."""
        return sum(1 for name, f in self.free.items() if f >= devices and self.pods_on(name, devices, need))

    def pods_with_room(self, devices: int, need: Need = ()) -> int:
        """Such pods the pool can take, several per node (inference replicas)."""
        return sum(self.pods_on(name, devices, need) for name, f in self.free.items() if f >= devices)

    def take(self, option: Option, training: bool, need: Need = ()) -> tuple[str, ...]:
        """Best fit: the fullest nodes that still fit. Inference replicas go round-robin over those nodes."""
        d = option.devices_per_node
        fits = {name: self.pods_on(name, d, need) for name, f in self.free.items() if f >= d}
        order = sorted((self.free[name], name) for name, n in fits.items() if n)
        chosen: list[str] = []
        if training:
            chosen = [name for _, name in order[: option.pods]]
        else:
            left = {name: fits[name] for _, name in order}
            while len(chosen) < option.pods:
                before = len(chosen)
                for _, name in order:
                    if left[name] and len(chosen) < option.pods:
                        left[name] -= 1
                        chosen.append(name)
                if len(chosen) == before:
                    raise RuntimeError(f"no room for {option.pods} replicas although room() said so")
        if len(chosen) < option.pods:
            raise RuntimeError(f"no room for {option.pods} pods although room() said so")
        for name in chosen:
            self.free[name] -= d
            if need and self.host is not None and name in self.host:
                host = self.host[name]
                for resource, amount in need:
                    host[resource] = host.get(resource, 0) - amount
        self.total -= d * len(chosen)
        self.most = max(self.free.values(), default=0)
        return tuple(chosen)


def need_of(vector: Mapping[str, int], device_resource: str | None) -> Need:
    """A pod's request vector without its devices (Slots counts those on their own axis)."""
    return tuple(sorted((k, v) for k, v in vector.items() if v > 0 and k != device_resource))
