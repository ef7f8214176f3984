"""An AcceleratorPool resolved against the catalog: the pool fields the cost model reads, with defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llama_operator.api.pool import AcceleratorPoolSpec
from llama_operator.api.types import CapacityType, Family, Mode
from llama_operator.catalog import Accelerator, Catalog
from llama_runtime import capabilities
from llama_runtime.capabilities import Capability, Line

Backend = Literal["neuron", "cuda", "cpu"]

BACKENDS: dict[Family, Backend] = {"neuron": "neuron", "nvidia": "cuda", "cpu": "cpu"}
RESOURCE_NAMES: dict[Family, str | None] = {
    "neuron": "aws.amazon.com/neuron",
    "nvidia": "nvidia.com/gpu",
    "cpu": None,
}


class PoolError(ValueError):
    """The pool's spec cannot be resolved (unknown instance type or accelerator, no price)."""


@dataclass(frozen=True, slots=True)
class PoolType:
    """Everything about a pool except its nodes. Equal pool types give equal estimates."""

    instance_type: str | None
    family: Family
    accelerator: str
    device: Accelerator
    devices_per_node: int
    allowed_device_counts: tuple[int, ...]
    price_per_node_hour: float
    capacity_type: CapacityType
    efa_per_node: int
    resource_name: str | None
    max_nodes: int | None
    vcpus_per_device: float
    """Host vCPUs per device (for cpu pools: per pod slot); worker requests scale with devices."""
    memory_gib_per_device: float
    """Host memory per device, likewise."""
    line: Line = "cpu"
    """The runtime line the pool's image runs (capabilities.line_for its family and accelerator)."""

    @property
    def backend(self) -> Backend:
        return BACKENDS[self.family]

    @property
    def price_per_device_hour(self) -> float:
        return self.price_per_node_hour / self.devices_per_node

    @property
    def capability(self) -> Capability:
        """What the runtime does on this pool: the row the memory model and the launch follow."""
        return capabilities.CAPABILITIES[self.line]

    @property
    def cores_per_device(self) -> int:
        """NeuronCores per device (logical cores on trn2; the catalog's ranksPerDevice); 0 off Neuron."""
        return self.device.ranks_per_device if self.family == "neuron" else 0

    def processes_per_pod(self, devices: int, mode: Mode = "train") -> int:
        """torchrun processes of a pod with `devices` devices, as the line runs `mode`."""
        cap = self.capability
        row = cap.training if mode == "train" else cap.serving
        if row is None:
            return 0
        return capabilities.processes_per_pod(row.processes, devices, self.cores_per_device)

    def shard_holders(self, devices: int) -> int:
        """Training: holders of a state shard and a micro batch each in one pod (0: no training)."""
        row = self.capability.training
        return capabilities.shard_holders_per_pod(row, devices, self.cores_per_device) if row else 0

    def tensor_parallel(self, devices: int) -> int:
        """Inference: the tensor-parallel degree of a replica on `devices` devices."""
        row = self.capability.serving
        return capabilities.tensor_parallel_degree(row, devices, self.cores_per_device) if row else 0

    def refusal(self, mode: Mode, precision: str | None = None) -> str | None:
        """Why the runtime cannot run `mode` here at all (the row's sentence), or None."""
        return capabilities.refusal(self.family, self.accelerator, mode, precision)


def _default_counts(devices: int) -> tuple[int, ...]:
    counts = {1 << i for i in range(devices.bit_length()) if 1 << i <= devices}
    return tuple(sorted(counts | {devices}))


def resolve_pool(spec: AcceleratorPoolSpec, catalog: Catalog) -> PoolType:
    """Fill the pool's unset fields from the catalog. Raises PoolError with one sentence."""
    itype = catalog.instance_types.get(spec.instance_type) if spec.instance_type else None
    if spec.instance_type and itype is None and spec.accelerator_model is None:
        raise PoolError(
            f"instance type {spec.instance_type} is not in the catalog; set acceleratorModel, devicesPerNode "
            "and pricePerNodeHour"
        )
    accelerator = spec.accelerator_model or (itype.accelerator if itype else "")
    device = catalog.accelerators.get(accelerator)
    if device is None:
        raise PoolError(
            f"accelerator {accelerator!r} is not in the catalog ({', '.join(catalog.accelerators)})"
        )
    if spec.family is not None and spec.family != device.family:
        raise PoolError(f"family {spec.family} does not match accelerator {accelerator} ({device.family})")
    devices = spec.devices_per_node or (itype.devices if itype else 0)
    if devices < 1:
        raise PoolError("devicesPerNode is required for an instance type outside the catalog")
    if spec.allowed_device_counts:
        counts = tuple(sorted(spec.allowed_device_counts))
    elif itype is not None and devices == itype.devices:
        counts = itype.allowed_device_counts
    else:
        counts = _default_counts(devices)
    counts = tuple(c for c in counts if c <= devices)
    if not counts:
        raise PoolError(f"no allowed device count fits {devices} devices per node")
    price = spec.price_per_node_hour
    if price is None:
        if itype is None or itype.price is None:
            raise PoolError(f"{spec.instance_type or accelerator} has no list price; set pricePerNodeHour")
        if spec.capacity_type == "reserved":
            raise PoolError("reserved capacity has no list price; set pricePerNodeHour")
        price = itype.price * (catalog.defaults.spot_price_factor if spec.capacity_type == "spot" else 1.0)
    vcpus = itype.vcpus / itype.devices if itype else 0.0
    memory = itype.memory_gib / itype.devices if itype else 0.0
    return PoolType(
        instance_type=spec.instance_type,
        family=device.family,
        accelerator=accelerator,
        device=device,
        devices_per_node=devices,
        allowed_device_counts=counts,
        price_per_node_hour=price,
        capacity_type=spec.capacity_type,
        efa_per_node=spec.efa_per_node if spec.efa_per_node is not None else (itype.efa if itype else 0),
        resource_name=spec.resource_name or RESOURCE_NAMES[device.family],
        max_nodes=spec.max_nodes,
        vcpus_per_device=vcpus,
        memory_gib_per_device=memory,
        line=capabilities.line_for(device.family, accelerator),
    )
