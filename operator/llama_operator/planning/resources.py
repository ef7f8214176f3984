"""What one worker pod asks kube-scheduler for: the one function both the planner's booking and the
renderer's `resources` come from, and the integer units both count in.

Units follow kube-scheduler's `framework.Resource`: cpu in millicores (`Quantity.MilliValue`), every
other resource in its base unit rounded up (`Quantity.Value`): bytes for memory and ephemeral-storage,
counts for devices, EFA interfaces and pods. Integers on both sides mean the planner's "fits" and the
scheduler's NodeResourcesFit (pkg/scheduler/framework/plugins/noderesources/fit.go, fitsRequest) can
only disagree when their inputs do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from llama_operator.planning.pools import PoolType

CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"
EFA = "vpc.amazonaws.com/efa"
MIB = 1024**2

HOST_RESERVE = 0.10
"""Share of an instance's vCPUs and memory left to the node (not requested by workers). A node's
allocatable is less than the instance (kube-reserved, system-reserved, the eviction threshold: see
https://kubernetes.io/docs/tasks/administer-cluster/reserve-compute-resources/) and DaemonSets (CNI,
device plugins, kube-proxy) request some of it, so a full-node pod asking for 100% would never bind."""
MIN_RESERVED_MEMORY_GIB = 2.5
"""At least this much memory stays with the node: on a 16 GiB instance the kernel keeps ~0.7 GiB and
EKS's kubelet reserves 255 MiB + 11 MiB per pod (~0.9 GiB at 58 pods) plus a 100 MiB eviction threshold,
so 10% would leave DaemonSets nothing."""

Resources = Mapping[str, int]
"""Resource name -> amount in the units above."""


@dataclass(frozen=True, slots=True)
class PodRequests:
    """The requests of one worker pod. Extended resources (devices, EFA) are also its limits; memory too
    (memory cannot be throttled, only OOM-killed); cpu has no limit."""

    resource_name: str | None = None
    """nvidia.com/gpu or aws.amazon.com/neuron; None on cpu pools."""
    devices: int = 0
    efa: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0

    def vector(self) -> dict[str, int]:
        """What the pod takes from its node, resource by resource, `pods` (one slot) included."""
        out = {PODS: 1}
        if self.resource_name and self.devices:
            out[self.resource_name] = self.devices
        if self.efa:
            out[EFA] = self.efa
        if self.cpu_millis:
            out[CPU] = self.cpu_millis
        if self.memory_bytes:
            out[MEMORY] = self.memory_bytes
        return out

    @property
    def cpu(self) -> str | None:
        """The cpu request as a Kubernetes quantity (millicores: exact, no rounding on the way back)."""
        return f"{self.cpu_millis}m" if self.cpu_millis else None

    @property
    def memory(self) -> str | None:
        """The memory request as a Kubernetes quantity (whole MiB by construction)."""
        if not self.memory_bytes:
            return None
        assert self.memory_bytes % MIB == 0, "memory is booked in whole MiB"
        return f"{self.memory_bytes // MIB}Mi"


def pod_requests(pool: PoolType, devices: int, spans_nodes: bool) -> PodRequests:
    """A worker pod of `devices` devices (cpu pools: slots) on `pool`.

    Host cpu and memory are the pod's pro rata share of what the instance keeps after the node's reserve
    (HOST_RESERVE, MIN_RESERVED_MEMORY_GIB). EFA goes only to
    pods of jobs that span nodes (NCCL / Neuron collectives between nodes), pro rata of the devices rounded
    up: a 2-GPU pod on a g5.12xlarge (4 GPUs, 1 EFA) asks for the node's one interface, a 4-GPU pod on a
    p5.48xlarge (8 GPUs, 32 EFA) for 16.
    """
    if devices < 1:
        raise ValueError(f"a worker pod holds at least one device or slot, not {devices}")
    share = devices / pool.devices_per_node
    efa = math.ceil(pool.efa_per_node * share) if spans_nodes and pool.efa_per_node else 0
    vcpus = pool.vcpus_per_device * pool.devices_per_node
    memory = pool.memory_gib_per_device * pool.devices_per_node
    usable_memory = max(0.0, memory - max(memory * HOST_RESERVE, MIN_RESERVED_MEMORY_GIB)) if memory else 0.0
    return PodRequests(
        resource_name=pool.resource_name,
        devices=devices if pool.resource_name else 0,
        efa=efa,
        cpu_millis=math.floor(share * vcpus * (1 - HOST_RESERVE) * 1000),
        memory_bytes=math.floor(share * usable_memory * 1024) * MIB,
    )


def add(into: dict[str, int], amounts: Resources, times: int = 1) -> None:
    for name, amount in amounts.items():
        into[name] = into.get(name, 0) + amount * times


def shortfall(free: Resources, need: Resources) -> list[str]:
    """The resources `need` asks for more of than `free` has (absent from `free` = none of it), as
    kube-scheduler checks them: only what is requested, and a zero request never fails."""
    return [name for name, amount in need.items() if amount > 0 and amount > free.get(name, 0)]
