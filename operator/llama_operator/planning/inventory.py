"""The engine's input: a snapshot of pools and nodes, and the jobs waiting for a decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from llama_operator.api.job import LlamaJobSpec, ProbeSpec
from llama_operator.api.pool import AcceleratorPoolSpec

if TYPE_CHECKING:
    from llama_operator.planning.probes import Measurement


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node of a pool. For cpu pools devices are worker pod slots: leave allocatable_devices None (the
    pool's devicesPerNode) and count in used_devices the slots held by llamaop workers on the node.

    Devices are one axis; everything else a worker pod requests (EFA, cpu, memory, pod slots: see
    planning.resources) is booked against `allocatable` minus `requested` where the node's allocatable is
    known. Without it (the simulator, `llamaop plan`) only devices are booked."""

    name: str
    pool: str
    ready: bool = True
    schedulable: bool = True
    allocatable_devices: int | None = None
    """None = the pool's devicesPerNode."""
    used_devices: int = 0
    """Devices requested by pods bound to the node (any pods, not only llamaop's)."""
    allocatable: Mapping[str, int] | None = None
    """The node's status.allocatable in planning.resources' units; None = unknown (devices only)."""
    requested: Mapping[str, int] = field(default_factory=dict)
    """What the pods holding the node request (lifecycle.usage), `pods` slots included. The pool's device
    resource is read from used_devices, not from here."""


@dataclass(frozen=True, slots=True)
class PoolState:
    name: str
    spec: AcceleratorPoolSpec
    nodes: tuple[NodeState, ...] = ()
    cooldown_until: datetime | None = None
    """The engine avoids the pool until then (set after a failover off it)."""
    learned: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """(mode, precision) -> factor on the calibrated speed, learned from jobs finished on this pool
    (planning/learning.py)."""

    def capacity_nodes(self) -> int:
        """Most nodes the pool can ever offer: maxNodes, else the nodes it has."""
        return self.spec.max_nodes if self.spec.max_nodes is not None else len(self.nodes)


@dataclass(frozen=True, slots=True)
class Inventory:
    pools: Sequence[PoolState]
    promised: Mapping[str, int] = field(default_factory=dict)
    """Node name -> devices promised to placed jobs whose pods are not bound yet."""
    promised_requests: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Node name -> the rest of what those pods will request (EFA, cpu, memory, pods), same units."""

    @classmethod
    def empty(cls, pools: Mapping[str, AcceleratorPoolSpec], *, nodes_per_pool: int = 4) -> Inventory:
        """Pools with idle nodes and nothing promised: maxNodes nodes each, else `nodes_per_pool`."""
        states = []
        for name, spec in pools.items():
            count = spec.max_nodes if spec.max_nodes is not None else nodes_per_pool
            nodes = tuple(NodeState(f"{name}-{i}", name) for i in range(count))
            states.append(PoolState(name, spec, nodes))
        return cls(tuple(states))


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job to decide on."""

    key: str
    """namespace/name"""
    spec: LlamaJobSpec
    created: datetime
    priority: int | None = None
    """None = spec.priority."""
    excluded_pools: frozenset[str] = frozenset()
    """Pools this job must avoid (the ones it failed over from)."""
    probe: ProbeSpec | None = None
    """Measure the job before placing it: a placeable job gets a `probe` decision (planning/probes.py)."""
    measured: Mapping[str, Measurement] = field(default_factory=dict)
    """Pool -> what this job's probe found there: its measured speed, or why the pool is ruled out."""

    @property
    def effective_priority(self) -> int:
        return self.spec.priority if self.priority is None else self.priority
