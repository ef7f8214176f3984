"""What the engine decides for one job, with the table of every pool it considered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from llama_operator.api.job import Candidate as CandidateStatus
from llama_operator.api.job import Condition, LlamaJobStatus, PlacementRecord
from llama_operator.api.types import Phase
from llama_operator.planning.resources import PodRequests

Outcome = Literal["placed", "queued", "rejected", "probe"]

PHASES: dict[Outcome, Phase] = {
    "placed": Phase.PLACED,
    "queued": Phase.QUEUED,
    "rejected": Phase.FAILED,
    "probe": Phase.QUEUED,  # measured first: Queued while the probes run
}
PLACED_CONDITION = "Placed"
# Enough to explain a decision in `kubectl get -o yaml` without bloating the object.
STATUS_CANDIDATES = 16
NOT_ACCEPTED = frozenset(
    {"FamilyNotAccepted", "AcceleratorNotAccepted", "CapacityTypeNotAccepted", "PoolNotAllowed"}
)
"""Candidate verdicts that only the job's spec or the pool's spec can change."""
# Every attempt stays: accruedCost is summed over the history, and backoffLimit caps it at 101 entries.
STATUS_HISTORY = 128


@dataclass(frozen=True, slots=True)
class Candidate:
    """One pool as the engine saw it for one job."""

    pool: str
    accelerator: str
    family: str
    capacity_type: str
    devices_per_node: int
    nodes: int
    """Training nodes, or inference pods."""
    fits: bool
    tokens_per_second: float | None
    hours: float | None
    price_per_hour: float | None
    cost: float | None
    cost_per_million_tokens: float | None
    free_devices: int
    available_now: bool
    verdict: str
    """Chosen, Costlier, Slower, NoCapacity, or the constraint that ruled the pool out."""
    note: str
    tokens_per_second_per_sequence: float | None = None
    """Inference: decode rate of one sequence."""

    def to_status(self) -> CandidateStatus:
        return CandidateStatus(
            pool=self.pool,
            accelerator=self.accelerator,
            capacity_type=self.capacity_type,
            devices_per_node=self.devices_per_node,
            nodes=self.nodes,
            fits=self.fits,
            tokens_per_second=_round(self.tokens_per_second, 1),
            tokens_per_second_per_sequence=_round(self.tokens_per_second_per_sequence, 2),
            hours=_round(self.hours, 3),
            price_per_hour=_round(self.price_per_hour, 4),
            cost=_round(self.cost, 2),
            cost_per_million_tokens=_round(self.cost_per_million_tokens, 4),
            free_devices=self.free_devices,
            available_now=self.available_now,
            verdict=self.verdict,
            note=self.note,
        )


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """One probe of a `probe` decision: the candidate's placement (its nodes booked) and what the probe is
    estimated to cost."""

    placement: Decision
    est_cost: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for one job. `placed`: run it now on `node_names`; `queued`: it fits somewhere
    but not now; `rejected`: no accepted pool can ever run it, `reason` names the binding constraint;
    `probe`: measure it first on `probes` (each booked like a placement), then decide again."""

    key: str
    outcome: Outcome
    reason: str
    """CamelCase: Placed, NoCapacity, DoesNotFit, ExceedsMaxPrice, ExceedsMaxCost, DeadlineMiss, ..."""
    message: str
    """One sentence for people."""
    pool: str | None = None
    accelerator: str | None = None
    family: str | None = None
    capacity_type: str | None = None
    instance_type: str | None = None
    backend: str | None = None
    """cpu, cuda or neuron: LLAMAOP_BACKEND of the workers."""
    engine: str | None = None
    """Inference: what serves on the pool (llama-runtime, vllm, nxd-inference; the capability table)."""
    resource_name: str | None = None
    """Extended resource each pod requests devices_per_node of (None on cpu pools)."""
    node_names: tuple[str, ...] = ()
    """One entry per pod: training nodes (distinct), or the node of each inference replica (may repeat)."""
    nodes: int = 0
    """Pods: training nodes, or inference replicas."""
    devices_per_node: int = 0
    processes_per_node: int = 0
    """torchrun nproc_per_node: GPUs, NeuronCores (trn2: logical cores), or 1 on cpu."""
    activation_checkpointing: bool = False
    requests: PodRequests = field(default_factory=PodRequests)
    """What each pod requests (planning.resources.pod_requests): what the planner booked on each of
    node_names, and what the rendered pods ask kube-scheduler for."""
    price_per_hour: float | None = None
    est_hours: float | None = None
    """Training only: startup plus compute time."""
    est_cost: float | None = None
    est_tokens_per_second: float | None = None
    est_tokens_per_second_per_sequence: float | None = None
    """Inference: decode rate of one sequence."""
    cost_per_million_tokens: float | None = None
    est_finish: datetime | None = None
    candidates: tuple[Candidate, ...] = ()
    probes: tuple[ProbePlan, ...] = ()
    """Outcome `probe`: where to measure the job."""

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def efa_per_node(self) -> int:
        """EFA interfaces per pod; 0 unless the job spans nodes on a pool with EFA."""
        return self.requests.efa

    def to_status(
        self, *, now: datetime, previous: LlamaJobStatus | None = None, every_pool: bool = False
    ) -> LlamaJobStatus:
        """The job's status after this decision: `previous` with placement, estimates, candidates, phase,
        reason and the Placed condition replaced, and the placement appended to the history. Counters
        (attempts, accruedCost) and progress are the caller's. `every_pool`: candidates for the pools the
        job does not accept too (`llamaop plan --json`; a job's status leaves them out, see status_rows)."""
        status = (previous or LlamaJobStatus()).model_copy(deep=True)
        placed = self.outcome == "placed"
        status.phase = PHASES[self.outcome]
        status.reason = self.reason
        status.message = self.message
        status.pool = self.pool if placed else None
        status.accelerator = self.accelerator if placed else None
        status.family = self.family if placed else None
        status.capacity_type = self.capacity_type if placed else None
        status.nodes = self.nodes if placed else None
        status.devices_per_node = self.devices_per_node if placed else None
        status.devices = self.devices if placed else None
        status.engine = self.engine if placed else None
        status.activation_checkpointing = self.activation_checkpointing if placed else None
        status.node_names = list(self.node_names) if placed else []
        status.price_per_hour = _round(self.price_per_hour, 4) if placed else None
        status.estimated_cost = _round(self.est_cost, 2) if placed else None
        status.estimated_hours = _round(self.est_hours, 3) if placed else None
        status.estimated_finish = self.est_finish if placed else None
        rows = self.candidates[:STATUS_CANDIDATES] if every_pool else status_rows(self.candidates)
        status.candidates = [c.to_status() for c in rows]
        status.conditions = _set_condition(
            status.conditions,
            Condition(
                type=PLACED_CONDITION,
                status="True" if placed else "False",
                reason=self.reason,
                message=self.message,
                last_transition_time=now,
            ),
        )
        if placed and self.pool is not None:
            record = PlacementRecord(
                pool=self.pool,
                accelerator=self.accelerator or "",
                nodes=self.nodes,
                devices_per_node=self.devices_per_node,
                reason=self.reason,
                message=self.message,
                time=now,
                attempt=status.attempts or 0,
            )
            status.placements = [*status.placements, record][-STATUS_HISTORY:]
        return status


def status_rows(candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    """The candidates a status shows: the pools the job accepts, or all of them when it accepts none (then
    they are the explanation). A pool the job's own spec rules out tells its reader nothing new, and those
    rows were most of each status write: the API server's cost of a LlamaJob status PATCH grows with the
    object (docs/operator-at-scale.md). `llamaop plan` still prints every pool."""
    accepted = tuple(c for c in candidates if c.verdict not in NOT_ACCEPTED)
    return (accepted or candidates)[:STATUS_CANDIDATES]


def finish_time(now: datetime, hours: float | None) -> datetime | None:
    return None if hours is None else now + timedelta(hours=hours)


def _set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of the same type; keep its transition time if its status did not change."""
    out = []
    for old in conditions:
        if old.type == new.type:
            if old.status == new.status:
                new = new.model_copy(update={"last_transition_time": old.last_transition_time})
            continue
        out.append(old)
    return [*out, new]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
