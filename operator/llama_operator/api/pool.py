"""The AcceleratorPool kind: a set of nodes of one instance type, with its price and capacity type."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field

from llama_operator.api import rules
from llama_operator.api.base import ApiModel, StatusModel
from llama_operator.api.fields import SET, Ident, unique
from llama_operator.api.job import Condition, ObjectMeta
from llama_operator.api.types import ACCELERATORPOOL_KIND, API_VERSION, CapacityType, Family, Mode, Precision

LabelValue = Annotated[str, Field(max_length=63)]
LabelKey = Annotated[str, Field(min_length=1, max_length=317)]


class Toleration(ApiModel):
    """A taint the pool's worker pods tolerate (as in a Pod spec)."""

    key: Annotated[str, Field(max_length=317)] | None = None
    """Taint key, e.g. aws.amazon.com/neuron; empty with Exists tolerates every taint."""
    operator: Literal["Equal", "Exists"] = "Equal"
    """Equal matches key and value; Exists matches the key alone."""
    value: LabelValue | None = None
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class AcceleratorPoolSpec(ApiModel):
    """Desired state of an AcceleratorPool. Unset fields come from the catalog entry of instanceType."""

    __rules__ = rules.POOL_SPEC

    node_selector: Annotated[dict[LabelKey, LabelValue], Field(min_length=1, max_length=16)]
    """Labels that select the pool's nodes, e.g. {llamaop.io/pool: p5-48xl-spot}."""
    instance_type: Ident | None = None
    """Instance type from the catalog (p5.48xlarge, trn1.32xlarge, ...)."""
    family: Family | None = None
    """neuron, nvidia or cpu; default from the catalog."""
    accelerator_model: Ident | None = None
    """Accelerator model from the catalog (trainium1, h100, ...); default from the instance type."""
    resource_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """Extended resource a worker requests (aws.amazon.com/neuron, nvidia.com/gpu); default by family."""
    devices_per_node: Annotated[int, Field(ge=1, le=128)] | None = None
    """Devices per node; for cpu pools the number of worker pod slots per node."""
    allowed_device_counts: Annotated[
        list[Annotated[int, Field(ge=1, le=128)]],
        Field(max_length=16, json_schema_extra=SET),
        AfterValidator(unique),
    ] = []
    """Device counts a pod may request; empty = the catalog's counts for the instance type."""
    price_per_node_hour: Annotated[float, Field(ge=0, le=1e5)] | None = None
    """USD per node-hour; overrides the catalog (set it for spot, reserved and capacity blocks)."""
    capacity_type: CapacityType = "on-demand"
    """on-demand, spot or reserved."""
    tolerations: Annotated[list[Toleration], Field(max_length=16)] = []
    """Taints of the pool's nodes that worker pods tolerate."""
    image: Annotated[str, Field(max_length=512)] | None = None
    """Worker image; default = the operator's image for the family."""
    efa_per_node: Annotated[int, Field(ge=0, le=64)] | None = None
    """EFA interfaces a multi-node worker pod requests; default from the catalog."""
    max_nodes: Annotated[int, Field(ge=0, le=100000)] | None = None
    """Most nodes the pool can have (autoscaler limit); unset = the nodes it has now."""


class LearnedSpeed(StatusModel):
    """What finished jobs taught about this pool's speed at one mode and precision."""

    mode: Mode
    precision: Precision
    factor: Annotated[float, Field(gt=0)]
    """Measured over calibrated tokens/s, as a geometric mean over the runs that counts the calibration as
    one more run; multiplies the calibrated efficiency for every model and node count on this pool."""
    runs: Annotated[int, Field(ge=0)]
    """Finished jobs behind the factor."""
    last_run: datetime | None = None


class AcceleratorPoolStatus(StatusModel):
    """Observed state of an AcceleratorPool, written by the operator."""

    ready_nodes: int | None = None
    nodes: int | None = None
    allocatable_devices: int | None = None
    allocated_devices: int | None = None
    free_devices: int | None = None
    """Allocatable minus allocated minus promised to pods not yet bound."""
    accelerator: str | None = None
    price_per_node_hour: float | None = None
    """Effective price (spec or catalog)."""
    learned_speeds: list[LearnedSpeed] = Field(default_factory=list, max_length=16)
    """Speed corrections learned from finished jobs, one per mode and precision. (The preset-keyed
    observedThroughput of earlier operators is ignored when read.)"""
    learned_from: list[str] = Field(default_factory=list, max_length=64)
    """The samples learned last (a probe's job uid and attempt), so a restart never counts one twice."""
    cooldown_until: datetime | None = None
    """The planner avoids the pool until then (after a failover off it)."""
    conditions: list[Condition] = Field(default_factory=list)
    last_update: datetime | None = None


class AcceleratorPool(ApiModel):
    """A pool of nodes with one kind of accelerator that LlamaJobs can be placed on."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = ACCELERATORPOOL_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AcceleratorPoolSpec
    status: AcceleratorPoolStatus | None = None
