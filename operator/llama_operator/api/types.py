"""Names and enumerations shared by both kinds."""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

GROUP: Final = "llamaop.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

LLAMAJOB_KIND: Final = "LlamaJob"
LLAMAJOB_PLURAL: Final = "llamajobs"
LLAMAJOB_SINGULAR: Final = "llamajob"
ACCELERATORPOOL_KIND: Final = "AcceleratorPool"
ACCELERATORPOOL_PLURAL: Final = "acceleratorpools"
ACCELERATORPOOL_SINGULAR: Final = "acceleratorpool"
CATEGORY: Final = "llamaop"

# Label the example pools select their nodes by (the local cluster's nodes carry it too).
POOL_LABEL: Final = "llamaop.io/pool"

Mode = Literal["train", "inference"]
Family = Literal["neuron", "nvidia", "cpu"]
FamilyChoice = Literal["neuron", "nvidia", "cpu", "any"]
Policy = Literal["cheapest", "fastest"]
CapacityType = Literal["on-demand", "spot", "reserved"]
Precision = Literal["bf16", "fp32"]

FAMILIES: Final[tuple[Family, ...]] = ("neuron", "nvidia", "cpu")
CAPACITY_TYPES: Final[tuple[CapacityType, ...]] = ("on-demand", "spot", "reserved")


class Phase(StrEnum):
    """Lifecycle of a LlamaJob."""

    QUEUED = "Queued"
    PLACED = "Placed"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
