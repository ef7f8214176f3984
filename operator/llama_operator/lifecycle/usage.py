"""What every pod in the cluster holds, node by node, kept up to date one watch event at a time.

A pod counts on the node it is bound to, nominated to (preemption made room for it there) or pinned to
(a required node affinity on metadata.name: the operator's workers and DaemonSet pods), whatever its
namespace or owner, until it finishes: kube-scheduler counts bound and nominated pods the same way,
and a pinned pod is about to be. Each counted pod also takes one of the node's `pods` slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llama_operator.lifecycle.views import PodView
from llama_operator.planning.resources import PODS


def holding(pod: PodView) -> tuple[str, Mapping[str, int]] | None:
    """(node, what the pod takes from it), or None when it holds nothing."""
    node = pod.holds
    if node is None:
        return None
    return node, {**pod.requests, PODS: 1}


class NodeUsage:
    """Requests summed per node over the pods that hold them. Each node's totals are replaced, never
    changed in place, so a shallow copy of `by_node` is a consistent snapshot."""

    __slots__ = ("_held", "by_node")

    def __init__(self) -> None:
        self.by_node: dict[str, Mapping[str, int]] = {}
        self._held: dict[str, tuple[str, Mapping[str, int]]] = {}

    @classmethod
    def of(cls, pods: Iterable[PodView]) -> NodeUsage:
        usage = cls()
        for pod in pods:
            usage.update(pod.uid or f"{pod.namespace}/{pod.name}", pod)
        return usage

    def update(self, uid: str, pod: PodView | None) -> str:
        """Apply a pod's new state (None: deleted). Returns "" when no node's totals changed, "freed" when
        the pod gave something back (room may have opened), "taken" when it only took more."""
        new = holding(pod) if pod is not None else None
        old = self._held.pop(uid, None) if new is None else self._held.get(uid)
        if old == new:
            return ""
        if old is not None:
            self._change(old[0], old[1], -1)
        if new is not None:
            self._held[uid] = new
            self._change(new[0], new[1], 1)
        return "taken" if old is None else "freed"

    def _change(self, node: str, amounts: Mapping[str, int], sign: int) -> None:
        totals = dict(self.by_node.get(node, {}))
        for name, value in amounts.items():
            left = totals.get(name, 0) + sign * value
            if left:
                totals[name] = left
            else:
                totals.pop(name, None)
        if totals:
            self.by_node[node] = totals
        else:
            self.by_node.pop(node, None)

    def __len__(self) -> int:
        return len(self._held)
