"""The LlamaJob kind: what to train or serve, and where it may run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field

from llama_operator.api import rules
from llama_operator.api.base import ApiModel, StatusModel, section
from llama_operator.api.fields import SET, Duration, Ident, Name, Uri, unique
from llama_operator.api.presets import ModelDimensions, PresetName
from llama_operator.api.types import (
    API_VERSION,
    CAPACITY_TYPES,
    LLAMAJOB_KIND,
    CapacityType,
    FamilyChoice,
    Mode,
    Phase,
    Policy,
    Precision,
)


class ModelSpec(ApiModel):
    """Which Llama to train or serve: a preset or explicit dimensions."""

    __rules__ = rules.MODEL

    preset: PresetName | None = None
    """Named architecture (tiny, llama3-1b, llama3-3b, llama3-8b, llama3-70b)."""
    dimensions: ModelDimensions | None = None
    """Explicit architecture, instead of a preset."""
    weights_uri: Uri | None = None
    """Hugging Face weights to start from (pvc://claim/path or an absolute path); empty = random init."""
    tokenizer_uri: Uri | None = None
    """Tokenizer directory; empty = the byte-level tokenizer."""


class DataSpec(ApiModel):
    """Training text."""

    uri: Uri = ""
    """Directory of .txt or .jsonl files (pvc://claim/path or an absolute path); empty = built-in corpus."""


class CheckpointSpec(ApiModel):
    """Where and how often training saves state; failover resumes from the latest checkpoint."""

    uri: Uri = ""
    """pvc://claim/sub/path, an absolute path, or empty for a scratch volume (no resume after failover)."""
    interval: Annotated[int, Field(ge=1, le=10_000_000)] = 100
    """Optimizer steps between checkpoints."""


class TrainingSpec(ApiModel):
    """How much to train and with which hyperparameters."""

    __rules__ = rules.TRAINING

    steps: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """Optimizer steps to run (set steps or tokens)."""
    tokens: Annotated[int, Field(ge=1, le=10**15)] | None = None
    """Training tokens to consume (set steps or tokens)."""
    sequence_length: Annotated[int, Field(ge=16, le=1_048_576)] = 2048
    """Tokens per sequence."""
    batch_size: Annotated[int, Field(ge=1, le=1_048_576)] = 8
    """Global batch in sequences per optimizer step, split over all ranks."""
    micro_batch: Annotated[int, Field(ge=1, le=65536)] = 1
    """Sequences per rank per forward pass; gradient accumulation makes up the rest."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 3e-4
    """Peak learning rate."""
    precision: Precision = "bf16"
    """Parameter and activation precision."""
    activation_checkpointing: bool | None = None
    """Recompute activations in the backward pass; unset = the planner turns it on when memory needs it."""
    checkpoint: CheckpointSpec = section(CheckpointSpec)
    """Checkpoint location and interval."""

    def total_tokens(self) -> int:
        if self.tokens is not None:
            return self.tokens
        return (self.steps or 0) * self.batch_size * self.sequence_length

    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        per_step = self.batch_size * self.sequence_length
        return -(-(self.tokens or 0) // per_step)


class InferenceSpec(ApiModel):
    """How to serve the model."""

    __rules__ = rules.INFERENCE

    replicas: Annotated[int, Field(ge=1, le=256)] = 1
    """Server pods, each on one node with devicesPerNode devices."""
    max_batch: Annotated[int, Field(ge=1, le=4096)] = 8
    """Concurrent sequences batched per decoding step; sizes the KV cache."""
    context_length: Annotated[int, Field(ge=16, le=1_048_576)] = 4096
    """Longest prompt plus completion, in tokens; sizes the KV cache."""
    max_new_tokens: Annotated[int, Field(ge=1, le=1_048_576)] = 256
    """Default completion length."""
    target_tokens_per_second: Annotated[float, Field(gt=0, le=1e9)] | None = None
    """Generated tokens per second the job needs across replicas; pools that cannot reach it lose."""
    min_tokens_per_second_per_sequence: Annotated[float, Field(ge=0, le=1e6)] = 10.0
    """Slowest acceptable decode rate of one sequence at maxBatch (10: a token every 100 ms, faster than
    people read); pools below it lose, whatever they cost. 0 turns the floor off."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """HTTP port of the OpenAI-compatible server."""


FamilyList = Annotated[
    list[FamilyChoice], Field(min_length=1, max_length=4, json_schema_extra=SET), AfterValidator(unique)
]
CapacityTypeList = Annotated[
    list[CapacityType], Field(min_length=1, max_length=3, json_schema_extra=SET), AfterValidator(unique)
]


class ResourcesSpec(ApiModel):
    """Which hardware the job accepts and how much of it."""

    __rules__ = rules.RESOURCES

    families: FamilyList = ["any"]
    """Accepted accelerator families (neuron, nvidia, cpu) or [any]."""
    accelerators: Annotated[
        list[Ident], Field(max_length=16, json_schema_extra=SET), AfterValidator(unique)
    ] = []
    """Accepted accelerator models (trainium1, trainium2, inferentia2, a10g, l40s, a100-40gb, a100-80gb,
    h100, h200, xeon-8vcpu); empty = every model of the accepted families."""
    devices_per_node: Annotated[int, Field(ge=1, le=128)] | None = None
    """Devices per pod (one pod per node); unset = the planner picks from the pool's allowed counts."""
    nodes: Annotated[int, Field(ge=1, le=1024)] | None = None
    """Nodes for training (one pod each); unset = the fewest that hold the model and meet the deadline."""


ProbePer = Literal["family", "accelerator"]
ProbeFallback = Literal["estimate", "fail"]


class ProbeSpec(ApiModel):
    """Measure a training job on its best candidates before placing it, and place it by what was measured.

    The operator runs the job itself (model, sequence length, batch, nodes and devices of each candidate)
    for warmupSteps + steps optimizer steps on the top candidates by estimated cost, one per family or per
    accelerator, in parallel where they have room. Probe pods are booked like any worker; what they cost
    is charged to the job. See docs/probes.md."""

    steps: Annotated[int, Field(ge=1, le=10_000)] = 5
    """Optimizer steps timed after the warm-up: their tokens/s is the measured speed."""
    warmup_steps: Annotated[int, Field(ge=1, le=10_000)] = 2
    """Steps run first and not timed: compilation (Neuron graphs, torch.compile), allocator and data
    warm-up. Reported as compile time."""
    candidates: Annotated[int, Field(ge=1, le=8)] = 3
    """Most pools probed at once, best estimated first."""
    per: ProbePer = "family"
    """One probe per accelerator family (neuron, nvidia, cpu) or per accelerator model (trainium1, h100)."""
    max_cost: Annotated[float, Field(gt=0, le=1e6)] | None = None
    """USD all probes together may cost: candidates are chosen within it by their estimated probe cost,
    and probes still running when what the probes cost reaches it are stopped (TimedOut, ProbeBudget)."""
    timeout: Duration = "20m"
    """A probe not measured this long after its pods were created is stopped and its pool ruled out."""
    on_all_failed: ProbeFallback = "estimate"
    """When no probe is measured: estimate places the job by estimate on the pools no probe ruled out
    (Failed with ProbesFailed if none is left); fail ends the job Failed with ProbesFailed."""


class PlacementSpec(ApiModel):
    """How the planner chooses, and what it may spend."""

    __rules__ = rules.PLACEMENT

    policy: Policy = "cheapest"
    """cheapest: least total cost within the deadline and caps; fastest: earliest finish within maxCost."""
    max_price_per_hour: Annotated[float, Field(gt=0, le=1e6)] | None = None
    """Upper bound on the job's price per hour in USD."""
    max_cost: Annotated[float, Field(gt=0, le=1e9)] | None = None
    """Upper bound on the estimated total cost of training in USD."""
    deadline: AwareDatetime | None = None
    """Training must be estimated to finish by this time (RFC 3339)."""
    finish_within: Duration | None = None
    """Instead of deadline: training must be estimated to finish this long after the job's creation."""
    capacity_types: CapacityTypeList = list(CAPACITY_TYPES)
    """Accepted capacity types: on-demand, spot, reserved (capacity blocks)."""
    pools: Annotated[list[Name], Field(max_length=64, json_schema_extra=SET), AfterValidator(unique)] = []
    """AcceleratorPools the job may use; empty = all."""
    pending_timeout: Duration = "5m"
    """Worker pods unscheduled this long make the job move to another pool (duration or seconds)."""
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Retries and failovers before the job fails."""
    probe: ProbeSpec | None = None
    """Training only: measure the job on its best candidates first and place it by measured cost."""


class LlamaJobSpec(ApiModel):
    """Desired state of a LlamaJob."""

    __rules__ = rules.JOB_SPEC

    mode: Mode
    """train or inference."""
    model: ModelSpec
    """The Llama model."""
    data: DataSpec = section(DataSpec)
    """Training data."""
    training: TrainingSpec | None = None
    """Training settings (mode train)."""
    inference: InferenceSpec | None = None
    """Serving settings (mode inference)."""
    resources: ResourcesSpec = section(ResourcesSpec)
    """Accepted hardware."""
    placement: PlacementSpec = section(PlacementSpec)
    """Placement policy and limits."""
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    """Higher priority jobs are placed first; equal priorities go oldest first."""
    suspend: bool = False
    """true removes the workers and keeps the job."""

    def serving(self) -> InferenceSpec:
        """The inference settings with defaults filled in."""
        return self.inference or InferenceSpec()


# ---------------------------------------------------------------- status


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: Annotated[str, Field(max_length=316)]
    status: Annotated[str, Field(max_length=16)]
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class Progress(StatusModel):
    """Training progress reported by rank 0 (copied from its pod's llamaop.io/progress annotation)."""

    step: int | None = None
    total_steps: int | None = None
    percent: int | None = None
    """Whole percent of totalSteps done."""
    loss: float | None = None
    tokens_per_second: float | None = None
    tokens: int | None = None
    """Tokens consumed so far."""
    eta_seconds: float | None = None
    checkpoint_step: int | None = None
    """Step of the latest checkpoint."""
    startup_seconds: float | None = None
    """From the launcher's start to the first training step (imports, rendezvous, model, data)."""
    warmup_steps: int | None = None
    """Steps left out of measuredTokensPerSecond (LLAMAOP_MEASURE_AFTER)."""
    compile_seconds: float | None = None
    """What the warm-up steps took beyond as many measured steps: compilation and warm-up."""
    measured_steps: int | None = None
    """Steps timed after the warm-up."""
    measured_tokens_per_second: float | None = None
    """Tokens/s over the measured steps only (all ranks together)."""
    updated: datetime | None = None


class Candidate(StatusModel):
    """One pool the planner considered, and why it won or lost."""

    pool: str
    accelerator: str = ""
    capacity_type: str = ""
    devices_per_node: int = 0
    nodes: int = 0
    fits: bool = False
    """The model fits the devices' memory."""
    tokens_per_second: float | None = None
    tokens_per_second_per_sequence: float | None = None
    """Inference: decode rate of one sequence."""
    hours: float | None = None
    price_per_hour: float | None = None
    cost: float | None = None
    cost_per_million_tokens: float | None = None
    free_devices: int = 0
    available_now: bool = False
    verdict: str = ""
    """Chosen, or the reason it lost (NoCapacity, DoesNotFit, ExceedsMaxPrice, DeadlineMiss, Costlier...)."""
    note: str = ""


class PlacementRecord(StatusModel):
    """One placement in the job's history."""

    pool: str
    accelerator: str = ""
    nodes: int = 0
    devices_per_node: int = 0
    reason: str = ""
    message: str = ""
    time: datetime | None = None
    attempt: int = 0
    price_per_hour: float | None = None
    """USD per hour while the placement held its nodes (accruedCost sums these)."""
    ended: datetime | None = None
    """When the attempt on this placement ended; empty while it runs."""
    outcome: str = ""
    """How it ended: Succeeded, WorkerFailed, NodeNotReady, Evicted, PendingTimeout, Suspended, ..."""


ProbePhase = Literal["Pending", "Running", "Measured", "Failed", "TimedOut"]


class ProbeRecord(StatusModel):
    """One probe of the job: where it ran, what was estimated and measured, and what it cost."""

    pool: str
    accelerator: str = ""
    family: str = ""
    capacity_type: str = ""
    attempt: int = 0
    """The probe's attempt number: its pods are named and labelled with it (llamaop.io/probe=true)."""
    nodes: int = 0
    devices_per_node: int = 0
    node_names: list[str] = Field(default_factory=list)
    activation_checkpointing: bool = False
    phase: ProbePhase = "Pending"
    reason: str = ""
    """Why it ended: Measured, WorkerFailed, NoMeasurement, Timeout, ProbeBudget, NodeNotReady..."""
    message: str = ""
    price_per_hour: float | None = None
    """USD per hour of the probe's devices (what it is charged at)."""
    started: datetime | None = None
    ended: datetime | None = None
    cost: float | None = None
    """USD the probe cost (so far, while it runs); part of the job's accruedCost."""
    estimated_tokens_per_second: float | None = None
    estimated_hours: float | None = None
    """The whole job on this candidate, as estimated before the probe."""
    estimated_cost: float | None = None
    estimated_cost_per_million_tokens: float | None = None
    measured_tokens_per_second: float | None = None
    measured_steps: int | None = None
    startup_seconds: float | None = None
    """The runtime's start-up: launcher to first step."""
    compile_seconds: float | None = None
    """What the warm-up steps took beyond steady steps (compilation)."""
    measured_hours: float | None = None
    """The whole job on this pool at the measured speed, start-up and compile time: as the planner priced
    it once the probes were done (its candidate row), what the job was placed by."""
    measured_cost: float | None = None
    measured_cost_per_million_tokens: float | None = None


class LlamaJobStatus(StatusModel):
    """Observed state of a LlamaJob, written by the operator."""

    phase: Phase | None = None
    reason: str | None = None
    """CamelCase reason of the latest decision or failure."""
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    pool: str | None = None
    accelerator: str | None = None
    family: str | None = None
    capacity_type: str | None = None
    nodes: int | None = None
    """Nodes (training) or pods (inference) in use."""
    devices_per_node: int | None = None
    devices: int | None = None
    """Devices in use in total."""
    engine: str | None = None
    """What serves an inference job on its pool: llama-runtime, vllm or nxd-inference."""
    activation_checkpointing: bool | None = None
    """Training: whether the placement recomputes activations (what the measured speed is compared with)."""
    node_names: list[str] = Field(default_factory=list)
    price_per_hour: float | None = None
    estimated_cost: float | None = None
    estimated_hours: float | None = None
    estimated_finish: datetime | None = None
    accrued_cost: float | None = None
    """USD spent so far across all attempts."""
    progress: Progress | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    placements: list[PlacementRecord] = Field(default_factory=list)
    probes: list[ProbeRecord] = Field(default_factory=list)
    """Probes run before the first placement (placement.probe), with what each measured and cost."""
    attempts: int | None = None
    """Attempts so far, probe attempts included (probes take the first attempt numbers)."""
    endpoint: str | None = None
    """Service URL of an inference job."""
    start_time: datetime | None = None
    completion_time: datetime | None = None
    observed_generation: int | None = None


class ObjectMeta(ApiModel):
    """The parts of Kubernetes object metadata the tools read; the rest passes through."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class LlamaJob(ApiModel):
    """A Llama training or inference job that the operator places on the cheapest suitable pool."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = LLAMAJOB_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LlamaJobSpec
    status: LlamaJobStatus | None = None

    def key(self) -> str:
        return f"{self.metadata.namespace or 'default'}/{self.metadata.name}"
