"""What a worker container runs: its command line, environment and volume layout.

LLAMAOP_* names come from `llama_runtime.contract`, the one place the operator -> worker contract is
written; the runtime reads the same constants back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llama_runtime import contract

from .names import rendezvous_service_name, train_pod_name
from .plan import WorkerPlan, parse_pvc_uri

# Mount points inside a worker container.
TMP_DIR = "/tmp"
CACHE_DIR = "/cache"
SHM_DIR = "/dev/shm"
CHECKPOINT_MOUNT = "/checkpoints"
MODEL_MOUNT = "/model"
DATA_MOUNT = "/data"
NEURON_CACHE_SUBDIR = "neuron-compile-cache"

# torch-neuronx sets NEURON_RT_ROOT_COMM_ID to MASTER_ADDR on this port unless told otherwise.
NEURON_ROOT_COMM_PORT = 62182

EnvVar = dict[str, Any]


def _value(name: str, value: object) -> EnvVar:
    return {"name": name, "value": str(value)}


def _field(name: str, path: str) -> EnvVar:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _resource(name: str, resource: str) -> EnvVar:
    """A resource of this container through the downward API (whole units, rounded up)."""
    return {"name": name, "valueFrom": {"resourceFieldRef": {"resource": resource, "divisor": "1"}}}


def model_value(plan: WorkerPlan) -> str:
    """A preset name as-is; explicit dimensions as compact, key-sorted JSON (stable across renders)."""
    if isinstance(plan.model, str):
        return plan.model
    return json.dumps(dict(plan.model), sort_keys=True, separators=(",", ":"))


def mounted_path(uri: str, mount: str) -> str:
    """The path a worker sees for a location: the mount point for pvc:// URIs, otherwise the URI as-is."""
    return mount if parse_pvc_uri(uri) else uri


def checkpoint_dir(plan: WorkerPlan) -> str:
    """Empty for an inference job without a checkpoint and for a probe (it neither resumes nor saves);
    other training always has one (an emptyDir at least)."""
    if plan.checkpoint_uri:
        return mounted_path(plan.checkpoint_uri, CHECKPOINT_MOUNT)
    return CHECKPOINT_MOUNT if plan.mode == "train" and not plan.probe else ""


def neuron_compile_cache_dir(plan: WorkerPlan) -> str:
    if plan.neuron and plan.neuron.compile_cache_on_checkpoint_volume and parse_pvc_uri(plan.checkpoint_uri):
        return f"{CHECKPOINT_MOUNT}/{NEURON_CACHE_SUBDIR}"
    return f"{CACHE_DIR}/{NEURON_CACHE_SUBDIR}"


def master_addr(plan: WorkerPlan) -> str:
    """Rank 0's stable name `{pod}.{service}`; a single node talks to itself without DNS."""
    if plan.replicas == 1:
        return "127.0.0.1"
    pod = train_pod_name(plan.job_name, plan.attempt, 0)
    return f"{pod}.{rendezvous_service_name(plan.job_name, plan.attempt)}"


# Every worker starts through the runtime's launcher, which counts the devices the container was given
# and then runs torchrun, the runtime's server or vLLM on them (llama_runtime/launch.py).
LAUNCH = ("python3", "-m", "llama_runtime", "launch")
# Where each engine answers the probes (all on the job's port): the runtime's /healthz; vLLM's /health
# (also behind NxD Inference through vLLM's Neuron plugin), 200 once the engine is up.
HEALTH_PATHS = {"llama-runtime": "/healthz", "vllm": "/health", "nxd-inference": "/health"}
NXD_ARTIFACTS_SUBDIR = "nxd-inference"


def train_command(plan: WorkerPlan, rank: int) -> list[str]:
    """torchrun's rendezvous flags; the launcher adds nproc_per_node from the devices it finds."""
    return [
        *LAUNCH,
        "train",
        f"--nnodes={plan.replicas}",
        f"--node_rank={rank}",
        f"--master_addr={master_addr(plan)}",
        f"--master_port={plan.training.rdzv_port}",
    ]


def serve_command(plan: WorkerPlan) -> list[str]:
    return [*LAUNCH, "serve"]


def health_path(plan: WorkerPlan) -> str:
    return HEALTH_PATHS[plan.engine]


def neuron_env(plan: WorkerPlan) -> list[EnvVar]:
    """Neuron compiler settings and the core layout of the pod's devices, and never which cores.

    The Neuron device plugin and scheduler extension choose the devices and set NEURON_RT_VISIBLE_CORES
    for the container (Neuron docs, "Neuron Scheduler Extension Flow Diagram": `--device=/dev/neuron1
    --env NEURON_RT_VISIBLE_CORES=2,3`); a fixed 0-11 here would make two replicas on one node claim the
    same cores. The launcher counts the cores it was given, with cores per device to check the count.
    """
    if plan.neuron is None:
        return []
    env = [_value(contract.CORES_PER_DEVICE, plan.neuron.logical_cores_per_device)]
    flags = list(plan.neuron.cc_flags)
    if plan.neuron.logical_nc_config is not None:
        # Compiler and runtime must agree on the logical core size.
        env.append(_value("NEURON_LOGICAL_NC_CONFIG", plan.neuron.logical_nc_config))
        flags.append(f"--logical-nc-config={plan.neuron.logical_nc_config}")
    if flags:
        env.append(_value("NEURON_CC_FLAGS", " ".join(flags)))
    cache = neuron_compile_cache_dir(plan)
    env.append(_value(contract.NEURON_COMPILE_CACHE, cache))
    if plan.engine == "nxd-inference":
        # NxD Inference under vLLM keeps the compiled model here and reuses it on a restart.
        env.append(_value("NEURON_COMPILED_ARTIFACTS", f"{cache}/{NXD_ARTIFACTS_SUBDIR}/{plan.job_name}"))
    return env


def engine_env(plan: WorkerPlan) -> list[EnvVar]:
    if plan.engine in ("vllm", "nxd-inference"):
        # Nothing leaves the pod: vLLM would otherwise try to report usage statistics.
        return [_value("VLLM_NO_USAGE_STATS", 1), _value("DO_NOT_TRACK", 1)]
    return []


def efa_env(plan: WorkerPlan) -> list[EnvVar]:
    if plan.efa_per_pod <= 0:
        return []
    return [
        _value("FI_PROVIDER", "efa"),
        _value("FI_EFA_USE_DEVICE_RDMA", 1),
        # torch forks data-loader workers after libfabric registered memory.
        _value("FI_EFA_FORK_SAFE", 1),
    ]


def _optional(pairs: list[tuple[str, object | None]]) -> list[EnvVar]:
    return [_value(name, value) for name, value in pairs if value is not None and value != ""]


def worker_env(plan: WorkerPlan) -> list[EnvVar]:
    """The container environment; `plan.extra_env` is applied last and replaces same-named entries."""
    env: list[EnvVar] = [
        _value(contract.JOB_NAME, plan.job_name),
        _value(contract.JOB_NAMESPACE, plan.namespace),
        _value(contract.JOB_UID, plan.uid),
        _field(contract.POD_NAME, "metadata.name"),
        _field(contract.POD_NAMESPACE, "metadata.namespace"),
        _value(contract.ATTEMPT, plan.attempt),
        _value(contract.MODE, plan.mode),
        _value(contract.BACKEND, plan.backend),
        _value(contract.MODEL, model_value(plan)),
    ]
    env += _optional(
        [
            (contract.ACCELERATOR, plan.accelerator),
            (contract.DEVICES, plan.devices_per_pod or None),
            (contract.MODEL_DIR, mounted_path(plan.model_dir, MODEL_MOUNT)),
            (contract.DATA_DIR, mounted_path(plan.data_dir, DATA_MOUNT)),
            (contract.PRECISION, plan.precision),
            (contract.SEED, plan.seed),
            (contract.COMPILE, None if plan.compile is None else int(plan.compile)),
            (contract.LOG_LEVEL, plan.log_level),
            (contract.CHECKPOINT_DIR, checkpoint_dir(plan)),
        ]
    )
    if plan.cpu_request:
        env.append(_resource(contract.CPUS, "requests.cpu"))
    if plan.mode == "train":
        t = plan.training
        env += _optional(
            [
                (contract.STEPS, t.steps),
                (contract.SEQ_LEN, t.seq_len),
                (contract.BATCH_SIZE, t.batch_size),
                (contract.MICRO_BATCH, t.micro_batch),
                (contract.LEARNING_RATE, None if t.learning_rate is None else repr(t.learning_rate)),
                (contract.WARMUP_STEPS, t.warmup_steps),
                (contract.CHECKPOINT_EVERY, t.checkpoint_every),
                (contract.CHECKPOINT_KEEP, t.checkpoint_keep),
                (contract.ACTIVATION_CHECKPOINTING, "1" if t.activation_checkpointing else None),
                (contract.PROGRESS_INTERVAL, t.progress_interval_seconds),
                (contract.MEASURE_AFTER, t.measure_after),
                (contract.METRICS_PORT, t.metrics_port),
            ]
        )
    else:
        i = plan.inference
        env += _optional(
            [
                (contract.ENGINE, plan.engine),
                (contract.PORT, i.port),
                (contract.MAX_BATCH, i.max_batch),
                (contract.MAX_NEW_TOKENS, i.max_new_tokens),
                (contract.CONTEXT_LENGTH, i.context_length),
                (contract.SERVED_MODEL_NAME, i.served_model_name),
            ]
        )
    env += neuron_env(plan)
    env += engine_env(plan)
    env += efa_env(plan)
    # The root filesystem is read-only: point every cache a library may write at the /cache emptyDir.
    env += [
        _value("HOME", TMP_DIR),
        _value("XDG_CACHE_HOME", CACHE_DIR),
        _value("HF_HOME", f"{CACHE_DIR}/huggingface"),
        _value("TORCHINDUCTOR_CACHE_DIR", f"{CACHE_DIR}/torchinductor"),
        _value("TRITON_CACHE_DIR", f"{CACHE_DIR}/triton"),
        _value("PYTHONDONTWRITEBYTECODE", 1),
        _value("PYTHONUNBUFFERED", 1),
    ]
    return _with_overrides(env, plan.extra_env)


def _with_overrides(env: list[EnvVar], extra: Mapping[str, str]) -> list[EnvVar]:
    overrides = dict(extra)
    out = [_value(e["name"], overrides.pop(e["name"])) if e["name"] in overrides else e for e in env]
    return out + [_value(name, value) for name, value in overrides.items()]
