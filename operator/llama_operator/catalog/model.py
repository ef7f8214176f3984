"""Types of the catalog: accelerators, instance types, published measurements, the calibration fitted to
them, and planning defaults."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llama_operator.api.presets import PRESETS
from llama_operator.api.types import Family, Mode

Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]

SpeedPrecision = Literal["bf16", "fp32", "fp8"]
"""Precisions the speed model keys its efficiencies by (fp16 is fitted as bf16)."""
PublishedPrecision = Literal["bf16", "fp16", "fp32", "fp8"]
Unit = Literal["seq/s", "tokens/s", "tokens/s/device", "ms/token"]


class _Entry(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Accelerator(_Entry):
    """One accelerator device (for cpu: one 8-vCPU worker pod slot)."""

    family: Family
    memory_gib: Annotated[float, Field(gt=0, alias="memoryGiB")]
    peak_tflops: Positive
    """Dense bf16."""
    peak_tflops_fp32: Positive
    peak_tflops_fp8: Positive | None = None
    """Dense fp8; None where the accelerator has no fp8 faster than bf16."""
    memory_bandwidth_tbs: Annotated[float, Field(gt=0, alias="memoryBandwidthTBs")]
    ranks_per_device: Annotated[int, Field(ge=0)]
    """torchrun processes per device; 0 = one process per pod (cpu)."""
    startup_minutes: Annotated[float, Field(ge=0)]

    def peak(self, precision: SpeedPrecision) -> float | None:
        """Peak TFLOP/s at a precision (None: no fp8 on this accelerator)."""
        if precision == "fp8":
            return self.peak_tflops_fp8
        return self.peak_tflops_fp32 if precision == "fp32" else self.peak_tflops


class InstanceType(_Entry):
    accelerator: str
    devices: Annotated[int, Field(ge=1)]
    vcpus: Annotated[int, Field(ge=1)]
    memory_gib: Annotated[float, Field(gt=0, alias="memoryGiB")]
    efa: Annotated[int, Field(ge=0)] = 0
    price: Annotated[float, Field(ge=0)] | None
    """On-demand USD per hour; None where the type is sold only as capacity blocks."""
    allowed_device_counts: tuple[Annotated[int, Field(ge=1)], ...]


class Defaults(_Entry):
    spot_price_factor: Annotated[float, Field(gt=0, le=1)] = 0.4
    spot_time_overhead: Annotated[float, Field(ge=0, le=10)] = 0.1
    usable_memory_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    multi_node_efficiency_no_efa: Annotated[float, Field(gt=0, le=1)] = 0.7
    """An assumption, not a measurement: throughput kept when a job spans nodes without EFA (every
    multi-node measurement in measurements.yaml ran on EFA or InfiniBand)."""


# ---------------------------------------------------------------- measurements


class Source(_Entry):
    title: str
    url: str


class ModelNumbers(_Entry):
    """A model outside the presets, by the numbers the speed model reads."""

    parameters: Positive
    layers: Annotated[int, Field(ge=1)]
    hidden: Annotated[int, Field(ge=1)]
    kv_width: Annotated[int, Field(ge=1)] | None = None
    """Key/value width per layer (kv heads x head dim); needed for inference measurements."""


class Figure(_Entry):
    value: Positive
    unit: Unit


class Measurement(_Entry):
    """One published throughput figure and what it was measured on."""

    id: str
    source: str
    """Key into Measurements.sources."""
    accelerator: str
    mode: Mode
    model: str
    """A preset or a key into Measurements.models."""
    precision: PublishedPrecision
    devices: Positive
    """Devices the figure covers: the whole job (training) or one replica (inference)."""
    nodes: Annotated[int, Field(ge=1)] = 1
    parallelism: str = ""
    framework: str = ""
    figure: Figure
    notes: str = ""
    # training
    sequence_length: Annotated[int, Field(ge=1)] | None = None
    activation_checkpointing: bool = False
    # inference
    batch: Annotated[int, Field(ge=1)] | None = None
    """Sequences one decode step computes: for engines with static shapes (Neuron), the compiled batch,
    whatever the number of live requests."""
    context: Annotated[int, Field(ge=1)] | None = None
    """Decode figures (ms/token): tokens of KV cache each sequence's attention reads per step."""
    input_length: Annotated[int, Field(ge=1)] | None = None
    output_length: Annotated[int, Field(ge=1)] | None = None
    concurrency: Annotated[int, Field(ge=1)] | None = None
    """Decode figures with prompt and output lengths: requests in flight (default: batch). The prompts of
    the other requests are computed between this one's tokens."""
    first_token_included: bool = False
    """The figure is the whole request time over its output tokens, the first token (the request's own
    prompt) included, as llmperf's inter-token latency is."""

    @property
    def in_flight(self) -> int:
        return self.concurrency or self.batch or 1

    @property
    def speed_precision(self) -> SpeedPrecision:
        return "bf16" if self.precision == "fp16" else self.precision

    @property
    def kind(self) -> Literal["train", "decode", "batch"]:
        if self.mode == "train":
            return "train"
        return "decode" if self.figure.unit == "ms/token" else "batch"

    def value(self) -> float:
        """The figure as the quantity the model predicts: training tokens/s per device; decode tokens/s
        per sequence; static-batch output tokens/s of the replica."""
        v, unit = self.figure.value, self.figure.unit
        if self.kind == "train":
            if unit == "seq/s":
                return v * (self.sequence_length or 0) / self.devices
            return v if unit == "tokens/s/device" else v / self.devices
        if self.kind == "decode":
            return 1000.0 / v
        return v * self.devices if unit == "tokens/s/device" else v

    def conversion(self) -> str:
        """How value() follows from the published figure, in words."""
        unit = self.figure.unit
        if self.kind == "train":
            if unit == "seq/s":
                return (
                    f"{self.figure.value:g} seq/s x {self.sequence_length} tokens / {self.devices:g} devices"
                )
            if unit == "tokens/s":
                return f"{self.figure.value:g} tokens/s / {self.devices:g} devices"
            return "as published (tokens/s per device)"
        if self.kind == "decode":
            return f"1000 / {self.figure.value:g} ms per token, per sequence"
        if unit == "tokens/s/device":
            return f"{self.figure.value:g} tokens/s per device x {self.devices:g} devices"
        return "as published (output tokens/s)"

    def check(self) -> str | None:
        """What is missing for this measurement's kind, if anything."""
        if self.kind == "train" and self.sequence_length is None:
            return "training needs sequenceLength"
        if self.kind == "decode" and (self.batch is None or self.context is None):
            return "a decode figure (ms/token) needs batch and context"
        if self.kind == "batch" and None in (self.batch, self.input_length, self.output_length):
            return "a static-batch figure needs batch, inputLength and outputLength"
        if self.concurrency is not None and self.concurrency > (self.batch or 0):
            return "concurrency above the batch: the step computes at most `batch` sequences"
        if (self.concurrency is not None or self.first_token_included) and not (
            self.input_length and self.output_length
        ):
            return "concurrency and firstTokenIncluded need inputLength and outputLength"
        if self.figure.unit == "seq/s" and self.kind != "train":
            return "seq/s is a training unit"
        return None


class Measurements(_Entry):
    sources: dict[str, Source]
    models: dict[str, ModelNumbers] = {}
    measurements: tuple[Measurement, ...]

    def model_post_init(self, _: object) -> None:
        ids = [m.id for m in self.measurements]
        if len(ids) != len(set(ids)):
            raise ValueError("measurement ids repeat")
        for m in self.measurements:
            problem = m.check()
            if m.source not in self.sources:
                problem = f"unknown source {m.source}"
            if m.model not in PRESETS and m.model not in self.models:
                problem = f"unknown model {m.model}"
            if m.mode == "inference" and m.model in self.models and self.models[m.model].kv_width is None:
                problem = f"inference on {m.model} needs its kvWidth"
            if problem:
                raise ValueError(f"measurement {m.id}: {problem}")


# ---------------------------------------------------------------- calibration (the fit's result)


class TrainingSpeed(_Entry):
    mfu: Fraction
    """Model FLOPs utilisation of one node: tokens/s x FLOPs per token / peak FLOP/s."""


class InferenceSpeed(_Entry):
    bandwidth_efficiency: Fraction
    """Fraction of peak memory bandwidth a decode step reaches reading weights and KV cache."""
    compute_efficiency: Fraction
    """Fraction of peak FLOP/s a step reaches when compute-bound (large batches, prefill)."""


class AcceleratorSpeeds(_Entry):
    train: dict[SpeedPrecision, TrainingSpeed]
    inference: dict[SpeedPrecision, InferenceSpeed]
    basis: dict[Mode, str]
    """Where the numbers come from: this accelerator's own measurements, or the pooled fit of its family
    or of all accelerators when it has none."""


class Calibration(_Entry):
    """The speed model's parameters, fitted to measurements.yaml (`llamaop calibrate --write`)."""

    node_retention: Fraction
    """Training throughput per device kept each time a job's node count doubles."""
    replica_retention: Fraction
    """Inference throughput per device kept each time a replica's device count doubles (tensor parallel)."""
    accelerators: dict[str, AcceleratorSpeeds]
    pooled: dict[str, AcceleratorSpeeds]
    """The fit for an accelerator without measurements, by family, and over all accelerators ("all")."""
    measurements: int
    """How many measurements the fit used."""

    def speeds(self, accelerator: str, family: str) -> AcceleratorSpeeds:
        """This accelerator's speeds, else its family's pooled fit, else the fit over all accelerators."""
        found = self.accelerators.get(accelerator) or self.pooled.get(family)
        return found if found is not None else self.pooled["all"]


class Catalog(_Entry):
    """Everything the planner knows about hardware before it sees a cluster."""

    defaults: Defaults = Defaults()
    accelerators: dict[str, Accelerator]
    instance_types: dict[str, InstanceType]
    measurements: Measurements | None = None
    calibration: Calibration | None = None

    def model_post_init(self, _: object) -> None:
        unknown = {t.accelerator for t in self.instance_types.values()} - set(self.accelerators)
        if self.measurements is not None:
            unknown |= {m.accelerator for m in self.measurements.measurements} - set(self.accelerators)
        if unknown:
            raise ValueError(f"catalog refers to unknown accelerators: {sorted(unknown)}")
        for name, itype in self.instance_types.items():
            if any(c > itype.devices for c in itype.allowed_device_counts):
                raise ValueError(f"{name}: allowedDeviceCounts exceed its {itype.devices} devices")
