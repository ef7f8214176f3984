"""What the lifecycle asks the controller to do. Actions of one job run in order; jobs run concurrently."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from llama_operator.planning.learning import Sample

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class PatchStatus:
    """Replace the job's status (a merge patch of the whole status object)."""

    namespace: str
    name: str
    status: Mapping[str, Any]


@dataclass(frozen=True)
class CreateWorkers:
    """Create the attempt's objects; ones that already exist are left as they are (idempotent)."""

    namespace: str
    name: str
    attempt: int
    manifests: tuple[Manifest, ...]


@dataclass(frozen=True)
class DeleteWorkers:
    """Delete the job's pods, Services and Roles matching a label selector (one attempt or all)."""

    namespace: str
    name: str
    selector: str
    whole_job: bool = False
    """Also the job's ServiceAccount and Service, which outlive attempts."""


@dataclass(frozen=True)
class RecordEvent:
    namespace: str
    name: str
    uid: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class CoolDownPool:
    """Keep the planner off a pool until `until` (written to the AcceleratorPool's status)."""

    pool: str
    until: datetime
    reason: str


@dataclass(frozen=True)
class RecordThroughput:
    """A finished job's measured speed, to be learned into its pool's status (planning/learning.py)."""

    pool: str
    sample: Sample
    sample_id: str = ""
    """Set for a probe's sample: the pool records it in learnedFrom and never learns it twice."""


@dataclass(frozen=True)
class ReportUnschedulable:
    """A worker pod the scheduler refused for a resource the operator had booked: a bug report (the
    inventory missed something), counted per pool and resource and logged with the scheduler's message."""

    namespace: str
    name: str
    pool: str
    node: str
    resources: tuple[str, ...]
    message: str


Action = (
    PatchStatus
    | CreateWorkers
    | DeleteWorkers
    | RecordEvent
    | CoolDownPool
    | RecordThroughput
    | ReportUnschedulable
)


@dataclass
class JobActions:
    """The ordered actions for one job, plus what the metrics want to know about them."""

    key: str
    actions: list[Action] = field(default_factory=list)
    placed_attempt: int | None = None
    """Set when this pass placed a new attempt."""
    failover_from: str | None = None
    failover_reason: str | None = None

    def final_status(self) -> PatchStatus | None:
        """The last status write: what the job's status is once these actions are carried out."""
        return next((a for a in reversed(self.actions) if isinstance(a, PatchStatus)), None)
