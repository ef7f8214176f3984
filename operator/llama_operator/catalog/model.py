"""Types of the catalog: accelerators, instance types, throughput profiles and planning defaults."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llama_operator.api.types import Family

Positive = Annotated[float, Field(gt=0)]


class _Entry(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Accelerator(_Entry):
    """One accelerator device (for cpu: one 8-vCPU worker pod slot)."""

    family: Family
    memory_gib: Annotated[float, Field(gt=0, alias="memoryGiB")]
    peak_tflops: Positive
    memory_bandwidth_tbs: Annotated[float, Field(gt=0, alias="memoryBandwidthTBs")]
    efficiency: Annotated[float, Field(gt=0, le=1)]
    ranks_per_device: Annotated[int, Field(ge=0)]
    """torchrun processes per device; 0 = one process per pod (cpu)."""
    startup_minutes: Annotated[float, Field(ge=0)]


class InstanceType(_Entry):
    accelerator: str
    devices: Annotated[int, Field(ge=1)]
    vcpus: Annotated[int, Field(ge=1)]
    memory_gib: Annotated[float, Field(gt=0, alias="memoryGiB")]
    efa: Annotated[int, Field(ge=0)] = 0
    price: Annotated[float, Field(ge=0)] | None
    """On-demand USD per hour; None where the type is sold only as capacity blocks."""
    allowed_device_counts: tuple[Annotated[int, Field(ge=1)], ...]


class Profile(_Entry):
    accelerator: str
    preset: str
    tokens_per_second_per_device: Positive
    source: str = ""


class Defaults(_Entry):
    spot_price_factor: Annotated[float, Field(gt=0, le=1)] = 0.4
    spot_time_overhead: Annotated[float, Field(ge=0, le=10)] = 0.1
    usable_memory_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    multi_node_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.92
    multi_node_efficiency_no_efa: Annotated[float, Field(gt=0, le=1)] = 0.7
    inference_bandwidth_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.6


class Catalog(_Entry):
    """Everything the planner knows about hardware before it sees a cluster."""

    defaults: Defaults = Defaults()
    accelerators: dict[str, Accelerator]
    instance_types: dict[str, InstanceType]
    profiles: tuple[Profile, ...] = ()

    def model_post_init(self, _: object) -> None:
        unknown = {t.accelerator for t in self.instance_types.values()} - set(self.accelerators)
        unknown |= {p.accelerator for p in self.profiles} - set(self.accelerators)
        if unknown:
            raise ValueError(f"catalog refers to unknown accelerators: {sorted(unknown)}")
        for name, itype in self.instance_types.items():
            if any(c > itype.devices for c in itype.allowed_device_counts):
                raise ValueError(f"{name}: allowedDeviceCounts exceed its {itype.devices} devices")

    def profile(self, accelerator: str, preset: str | None) -> float | None:
        """Measured training tokens/s per device, if the catalog has one."""
        for p in self.profiles:
            if p.accelerator == accelerator and p.preset == preset:
                return p.tokens_per_second_per_device
        return None
