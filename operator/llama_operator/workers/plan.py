"""The input of the renderers: one attempt of one LlamaJob, already placed on a pool and its nodes.

The controller builds a `WorkerPlan` from the LlamaJob and the planner's decision; everything here is
plain data so this package depends on neither the API models nor the planner. Validation happens at
construction, so a plan that exists renders to manifests the API server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_runtime import contract

Mode = Literal["train", "inference"]
Backend = Literal["cpu", "cuda", "neuron"]
Engine = Literal["llama-runtime", "vllm", "nxd-inference"]
"""What serves an inference pod (the capability table's `serving.engine`); training is always the runtime."""
ENGINE_BACKENDS: dict[str, tuple[str, ...]] = {
    "llama-runtime": ("cpu", "cuda", "neuron"),
    "vllm": ("cuda",),
    "nxd-inference": ("neuron",),
}
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

GPU_RESOURCE = "nvidia.com/gpu"
NEURON_RESOURCE = "aws.amazon.com/neuron"
EFA_RESOURCE = "vpc.amazonaws.com/efa"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
PVC_SCHEME = "pvc://"


def _is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


@dataclass(frozen=True)
class ClaimRef:
    """A `pvc://claim/sub/path` URI: the claim is mounted with `sub_path` (empty = the claim's root)."""

    claim: str
    sub_path: str = ""


def parse_pvc_uri(uri: str) -> ClaimRef | None:
    """`pvc://claim/sub/path` -> ClaimRef; any other string -> None. Raises ValueError on a bad pvc URI."""
    if not uri.startswith(PVC_SCHEME):
        return None
    claim, _, sub_path = uri[len(PVC_SCHEME) :].partition("/")
    sub_path = sub_path.strip("/")
    if not _is_dns_subdomain(claim):
        raise ValueError(f"{uri!r}: {claim!r} is not a valid PersistentVolumeClaim name")
    # The kubelet refuses subPaths that climb out of the volume; say so before the pod is created.
    if sub_path and any(part in ("", ".", "..") for part in sub_path.split("/")):
        raise ValueError(f"{uri!r}: sub path {sub_path!r} must not contain empty, '.' or '..' parts")
    return ClaimRef(claim=claim, sub_path=sub_path)


def _check_location(what: str, uri: str) -> None:
    """A location is empty, `pvc://...` or an absolute path (the runtime reads plain paths only)."""
    if not uri or uri.startswith("/"):
        return
    if parse_pvc_uri(uri) is None:
        raise ValueError(f"{what} {uri!r} must be empty, pvc://claim/path or an absolute path")


@dataclass(frozen=True)
class Toleration:
    """One pod toleration (the pool's taints to tolerate)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.operator not in ("Equal", "Exists"):
            raise ValueError(f"toleration operator {self.operator!r} must be Equal or Exists")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds only applies to effect NoExecute")

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> Toleration:
        """From the Kubernetes form (camelCase keys), as AcceleratorPool specs carry it."""
        return cls(
            key=data.get("key"),
            operator=data.get("operator") or "Equal",
            value=data.get("value"),
            effect=data.get("effect"),
            toleration_seconds=data.get("tolerationSeconds"),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if self.key is not None:
            out["key"] = self.key
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


@dataclass(frozen=True)
class NeuronSettings:
    """How a pool's Neuron devices split into the NeuronCores that torchrun starts one process each on."""

    physical_cores_per_device: int = 2
    # trn2 groups physical cores into logical ones (NEURON_LOGICAL_NC_CONFIG); None leaves it unset.
    logical_nc_config: int | None = None
    # A compile cache on a persistent checkpoint claim survives failover; otherwise it is an emptyDir.
    compile_cache_on_checkpoint_volume: bool = True
    cc_flags: tuple[str, ...] = ("--model-type=transformer",)

    def __post_init__(self) -> None:
        if self.physical_cores_per_device < 1:
            raise ValueError("physical_cores_per_device must be at least 1")
        lnc = self.logical_nc_config
        if lnc is not None and (lnc < 1 or self.physical_cores_per_device % lnc):
            cores = self.physical_cores_per_device
            raise ValueError(f"logical_nc_config {lnc} must divide physical_cores_per_device {cores}")

    @property
    def logical_cores_per_device(self) -> int:
        return self.physical_cores_per_device // (self.logical_nc_config or 1)


TRN1 = NeuronSettings(physical_cores_per_device=2)
INF2 = NeuronSettings(physical_cores_per_device=2)
# Trainium2: 8 physical cores per device, LNC=2 by default -> 4 logical cores (64 on a trn2.48xlarge).
TRN2 = NeuronSettings(physical_cores_per_device=8, logical_nc_config=2)


def neuron_settings_for_instance_type(instance_type: str) -> NeuronSettings:
    """Core layout of an EC2 Neuron instance type (trn1/trn1n, inf2, trn2 and its variants)."""
    family = instance_type.split(".", 1)[0]
    if family.startswith("trn1"):
        return TRN1
    if family.startswith("inf2"):
        return INF2
    if family.startswith("trn2"):
        return TRN2
    raise ValueError(f"no NeuronCore layout known for instance type {instance_type!r}")


@dataclass(frozen=True)
class TrainingSettings:
    """None leaves a setting to the runtime's default (the env var is not set)."""

    steps: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    micro_batch: int | None = None
    learning_rate: float | None = None
    warmup_steps: int | None = None
    checkpoint_every: int | None = None
    checkpoint_keep: int | None = None
    activation_checkpointing: bool = False
    progress_interval_seconds: float | None = None
    measure_after: int | None = None
    """Steps left out of the measured tokens/s (a probe's warm-up); None: the runtime's default."""
    rdzv_port: int = contract.DEFAULT_RDZV_PORT
    metrics_port: int = contract.DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class InferenceSettings:
    port: int = contract.DEFAULT_PORT
    max_batch: int | None = None
    max_new_tokens: int | None = None
    served_model_name: str | None = None
    context_length: int | None = None  # longest prompt + completion (vLLM's --max-model-len)
    # Loading weights (and compiling for Neuron) can take long; liveness waits until /healthz first answers.
    startup_timeout_seconds: int = 1800


@dataclass(frozen=True)
class PodSecurity:
    """Settings that keep worker pods admissible under the `restricted` Pod Security Standard."""

    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int = 1000
    read_only_root_filesystem: bool = True

    def __post_init__(self) -> None:
        if self.run_as_user == 0:
            raise ValueError("workers run as non-root: run_as_user must not be 0")


@dataclass(frozen=True)
class WorkerPlan:
    """One attempt of one LlamaJob, placed: what to run, where, and with which resources.

    `node_names` has one entry per pod: per training rank (distinct nodes, rank i on node_names[i]) or per
    inference replica (a node may repeat). The number of inference replicas is len(node_names).
    """

    job_name: str
    namespace: str
    uid: str
    mode: Mode
    backend: Backend
    pool: str
    image: str
    node_names: tuple[str, ...]
    model: str | Mapping[str, Any]
    attempt: int = 0
    image_pull_policy: PullPolicy = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    devices_per_pod: int = 0  # accelerators per pod; on CPU pools the worker slots (no resource request)
    resource_name: str | None = None  # nvidia.com/gpu, aws.amazon.com/neuron; None on CPU pools
    accelerator: str = ""  # accelerator model (trainium1, h100, xeon-8vcpu): the capability row to run
    engine: Engine = "llama-runtime"
    neuron: NeuronSettings | None = None  # required when backend == "neuron"
    efa_per_pod: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    cpu_request: str | None = None
    memory_request: str | None = None  # also the memory limit: memory cannot be throttled, only OOM-killed
    cpu_limit: str | None = None
    shm_size: str | None = None  # sizeLimit of the memory-backed /dev/shm; None = bounded by the pod's memory
    model_dir: str = ""  # pvc://claim/path (mounted read-only at /model), an absolute path, or empty
    data_dir: str = ""  # pvc://claim/path (mounted read-only at /data), an absolute path, or empty
    checkpoint_uri: str = ""  # pvc://claim/path -> /checkpoints; absolute path as-is; "" = emptyDir
    precision: str | None = None
    seed: int | None = None
    compile: bool | None = None  # torch.compile; None = the runtime's default for the backend
    log_level: str | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    security: PodSecurity = field(default_factory=PodSecurity)
    termination_grace_period_seconds: int = 60
    extra_env: Mapping[str, str] = field(default_factory=dict)  # set last: overrides rendered values
    probe: bool = False
    """A probe attempt: measured steps only, no checkpoints (nothing read or written), labelled as a probe."""

    def __post_init__(self) -> None:
        if not _is_dns_subdomain(self.job_name):
            raise ValueError(f"job name {self.job_name!r} is not a valid Kubernetes object name")
        if len(self.namespace) > 63 or not _DNS_LABEL.match(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid namespace name")
        if not self.uid:
            raise ValueError("uid is required: children are owned by the LlamaJob")
        if self.mode not in ("train", "inference"):
            raise ValueError(f"mode {self.mode!r} must be train or inference")
        if self.backend not in ("cpu", "cuda", "neuron"):
            raise ValueError(f"backend {self.backend!r} must be cpu, cuda or neuron")
        if self.attempt < 0:
            raise ValueError("attempt must be >= 0")
        if self.engine not in ENGINE_BACKENDS:
            raise ValueError(f"engine {self.engine!r} must be one of {', '.join(ENGINE_BACKENDS)}")
        if self.probe and self.mode != "train":
            raise ValueError("only training is probed")
        if self.probe and self.checkpoint_uri:
            raise ValueError("a probe must not touch the job's checkpoints")
        if self.mode == "train" and self.engine != "llama-runtime":
            raise ValueError(f"training runs llama-runtime, not {self.engine}")
        if self.backend not in ENGINE_BACKENDS[self.engine]:
            raise ValueError(f"engine {self.engine} does not run on backend {self.backend}")
        if not self.image:
            raise ValueError("image is required")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"image pull policy {self.image_pull_policy!r} is not one Kubernetes knows")
        if not self.node_names or any(not n for n in self.node_names):
            raise ValueError("node_names must name at least one node and no empty ones")
        if (
            self.mode == "train"
            and self.backend != "cpu"
            and len(set(self.node_names)) != len(self.node_names)
        ):
            raise ValueError("accelerator training runs one pod per node: node_names must be distinct")
        self._check_accelerator()
        if self.efa_per_pod < 0:
            raise ValueError("efa_per_pod must be >= 0")
        for what, uri in (
            ("model_dir", self.model_dir),
            ("data_dir", self.data_dir),
            ("checkpoint_uri", self.checkpoint_uri),
        ):
            _check_location(what, uri)
        for port in (self.training.rdzv_port, self.training.metrics_port, self.inference.port):
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is out of range")
        bad_env = [name for name in self.extra_env if not _ENV_NAME.match(name)]
        if bad_env:
            raise ValueError(f"invalid environment variable names: {bad_env}")

    def _check_accelerator(self) -> None:
        if self.backend == "cpu":
            if self.resource_name is not None:
                raise ValueError("a cpu backend requests no accelerator resource")
            return
        if not self.resource_name:
            raise ValueError(f"backend {self.backend} needs resource_name (e.g. {GPU_RESOURCE})")
        if self.devices_per_pod < 1:
            raise ValueError(f"backend {self.backend} needs devices_per_pod >= 1")
        if self.backend == "neuron":
            if self.neuron is None:
                raise ValueError("backend neuron needs neuron=NeuronSettings(...), e.g. TRN1, TRN2 or INF2")
            # The core arithmetic below assumes whole devices; NeuronCore-level allocation is not handled.
            if self.resource_name != NEURON_RESOURCE:
                raise ValueError(f"backend neuron requests {NEURON_RESOURCE}, not {self.resource_name}")

    @property
    def replicas(self) -> int:
        """Pods in this attempt: training nodes or inference replicas."""
        return len(self.node_names)
