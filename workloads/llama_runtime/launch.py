"""`python -m llama_runtime launch train|serve [ARGS]`: start a worker's processes on what it was given.

The operator decides how many devices a pod gets, not which: the NVIDIA device plugin exposes the GPUs
it picked, and the Neuron device plugin with its scheduler extension mounts the chosen devices and sets
NEURON_RT_VISIBLE_CORES to their cores, e.g. `--device=/dev/neuron1 --env NEURON_RT_VISIBLE_CORES=2,3`
(Neuron docs, "Neuron Scheduler Extension Flow Diagram",
https://awsdocs-neuron.readthedocs-hosted.com/en/latest/containers/tutorials/k8s-neuron-scheduler-flow.html).
Two replicas sharing one inf2.48xlarge therefore see different cores, and nothing here may overwrite
that variable. So the launcher counts what the container has, reads its line's row of the capability
table (how many processes per device, core or pod; which engine serves) and starts:

- train: torchrun with nproc_per_node from that count; the operator's rendezvous flags pass through;
- serve, engine llama-runtime: the runtime's server, under torchrun when the replica spans several
  devices (tensor parallel, rank 0 serves HTTP);
- serve, engine vllm (CUDA) or nxd-inference (Neuron, through vLLM's Neuron plugin): `vllm serve` with
  --tensor-parallel-size = the GPUs or NeuronCores given, on the same port, with /health and /metrics.

Import-light (no torch): it decides and then replaces itself with the command (exec).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from llama_runtime import contract
from llama_runtime.capabilities import Capability, Engine, Processes, capability
from llama_runtime.errors import UserError

FAMILIES: Final = {"cpu": "cpu", "cuda": "nvidia", "neuron": "neuron"}
TORCHRUN: Final = ("-m", "torch.distributed.run")
READS: Final = frozenset(
    {
        contract.ENGINE,
        contract.ACCELERATOR,
        contract.DEVICES,
        contract.CORES_PER_DEVICE,
        contract.CONTEXT_LENGTH,
        contract.CPUS,
    }
)
"""Contract variables read here rather than by config.py."""
# Flags the launcher owns; the operator passes the rendezvous ones (nnodes, node_rank, master_*).
OWN_TORCHRUN_FLAGS: Final = ("--nproc_per_node", "--nproc-per-node", "--standalone")


@dataclass(frozen=True)
class Given:
    """What this container can use, as the device plugins and the kubelet left it."""

    gpus: int = 0
    neuron_devices: int = 0
    neuron_cores: tuple[int, ...] | None = None
    """NEURON_RT_VISIBLE_CORES as the device plugin set it; None when it is not set."""
    cpus: float = 1.0
    vllm_command: bool = True
    """`vllm` is on PATH (else vLLM's API server module is run by this Python)."""


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    """Variables to add for the started processes (never NEURON_RT_VISIBLE_CORES)."""
    processes: int = 1
    tensor_parallel: int = 1
    engine: str = "llama-runtime"
    notes: list[str] = field(default_factory=list)


def parse_cores(value: str) -> tuple[int, ...]:
    """NEURON_RT_VISIBLE_CORES: "3", "0-11", "2,3" or "0-3,8-11" -> the core indices."""
    cores: list[int] = []
    for part in value.replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"NEURON_RT_VISIBLE_CORES={value!r} is not a core index, range or list of them")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        cores.extend(range(lo, hi + 1))
    if len(set(cores)) != len(cores):
        raise UserError(f"NEURON_RT_VISIBLE_CORES={value!r} names a core twice")
    return tuple(cores)


def _cgroup_cpus(root: Path) -> float | None:
    """The container's CPU limit from cgroup v2 (cpu.max) or v1 (cfs quota); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _gpus(env: Mapping[str, str], dev: Path) -> int:
    """GPUs this container sees: CUDA_VISIBLE_DEVICES when set, else the NVIDIA device nodes mounted in."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    return len([p for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)])


def detect(
    env: Mapping[str, str] | None = None, dev: Path = Path("/dev"), cgroup: Path = Path("/sys/fs/cgroup")
) -> Given:
    env = os.environ if env is None else env
    visible = env.get("NEURON_RT_VISIBLE_CORES")
    try:
        affinity = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        affinity = float(os.cpu_count() or 1)
    # The kubelet turns a CPU request into a share, not a limit: the operator passes the request itself.
    limits = [v for v in (_cgroup_cpus(cgroup), _requested(env)) if v]
    return Given(
        gpus=_gpus(env, dev),
        neuron_devices=len([p for p in dev.glob("neuron*") if re.fullmatch(r"neuron\d+", p.name)]),
        neuron_cores=parse_cores(visible) if visible else None,
        cpus=min([affinity, *limits]),
        vllm_command=shutil.which("vllm") is not None,
    )


def _requested(env: Mapping[str, str]) -> float | None:
    try:
        value = float(env.get(contract.CPUS, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class Hardware:
    """The devices of one pod as the launcher counts them, checked against the placement."""

    backend: str
    devices: int
    cores: int
    """NeuronCores the container may use (0 off Neuron)."""

    def count(self, processes: Processes) -> int:
        if processes == "per-pod":
            return 1
        if processes == "per-core":
            if self.backend != "neuron":
                raise UserError(f"one process per NeuronCore needs the neuron backend, not {self.backend}")
            return self.cores
        return self.devices


def hardware(backend: str, env: Mapping[str, str], given: Given) -> Hardware:
    """Counts the pod's devices and, where the operator said how many it placed, checks they agree."""
    placed = _int(env, contract.DEVICES, 0) if env.get(contract.DEVICES) else None
    if backend == "cpu":
        # No device plugin: a cpu pool's "devices" are worker slots, and the placement is the count.
        return Hardware("cpu", placed or 1, 0)
    if backend == "cuda":
        if given.gpus < 1:
            raise UserError(
                "backend cuda but this container sees no GPU (CUDA_VISIBLE_DEVICES, /dev/nvidia*)"
            )
        if placed is not None and placed != given.gpus:
            raise UserError(f"the placement gave this pod {placed} GPUs but the container sees {given.gpus}")
        return Hardware("cuda", given.gpus, 0)
    if backend == "neuron":
        per_device = _int(env, contract.CORES_PER_DEVICE, 2)
        if given.neuron_cores is not None:
            cores = len(given.neuron_cores)
            devices = given.neuron_devices or -(-cores // per_device)
        elif given.neuron_devices:
            devices, cores = given.neuron_devices, given.neuron_devices * per_device
        else:
            raise UserError("backend neuron but no /dev/neuron* device and no NEURON_RT_VISIBLE_CORES")
        if placed is not None and placed * per_device != cores:
            visible = env.get("NEURON_RT_VISIBLE_CORES", "")
            raise UserError(
                f"the placement gave this pod {placed} Neuron devices ({placed * per_device} cores) but the "
                f"container may use {cores} (NEURON_RT_VISIBLE_CORES={visible!r})"
            )
        return Hardware("neuron", devices, cores)
    raise UserError(f"launch needs LLAMAOP_BACKEND cpu, cuda or neuron, not {backend!r}")


def _row(backend: str, env: Mapping[str, str]) -> Capability:
    if backend not in FAMILIES:
        raise UserError(f"launch needs {contract.BACKEND} cpu, cuda or neuron, not {backend!r}")
    return capability(FAMILIES[backend], env.get(contract.ACCELERATOR, ""))


def _threads(env: Mapping[str, str], given: Given, processes: int) -> dict[str, str]:
    """torchrun sets OMP_NUM_THREADS=1 unless told; give each process its share of the container's CPUs."""
    if "OMP_NUM_THREADS" in env:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, int(given.cpus // processes)))}


def plan_train(args: Sequence[str], env: Mapping[str, str], given: Given, python: str) -> Launch:
    backend = env.get(contract.BACKEND, "cpu")
    row = _row(backend, env)
    if row.training is None:
        raise UserError(f"{row.line} does not train")
    for arg in args:
        if arg.split("=", 1)[0] in OWN_TORCHRUN_FLAGS:
            raise UserError(f"{arg}: the launcher sets the process count from the devices it is given")
    nproc = hardware(backend, env, given).count(row.training.processes)
    argv = [python, *TORCHRUN, *args, f"--nproc_per_node={nproc}", "-m", "llama_runtime", "train"]
    return Launch(argv, _threads(env, given, nproc), nproc, 1, "llama-runtime")


def plan_serve(args: Sequence[str], env: Mapping[str, str], given: Given, python: str) -> Launch:
    backend = env.get(contract.BACKEND, "cpu")
    row = _row(backend, env)
    if row.serving is None:
        raise UserError(f"{row.line} does not serve")
    engine: Engine = env.get(contract.ENGINE) or row.serving.engine  # type: ignore[assignment]
    hw = hardware(backend, env, given)
    degree = hw.count(row.serving.processes if engine == row.serving.engine else "per-device")
    if engine == "llama-runtime":
        serve = ["-m", "llama_runtime", "serve", *args]
        if degree == 1:
            return Launch([python, *serve], {}, 1, 1, engine)
        torchrun = [python, *TORCHRUN, "--standalone", "--nnodes=1", f"--nproc_per_node={degree}"]
        return Launch([*torchrun, *serve], _threads(env, given, degree), degree, degree, engine)
    if engine in ("vllm", "nxd-inference"):
        from llama_runtime.serve.vllm import vllm_argv

        cli = (
            ["vllm", "serve"] if given.vllm_command else [python, "-m", "vllm.entrypoints.openai.api_server"]
        )
        argv, extra_env, notes = vllm_argv(engine, env, degree, list(args), cli)
        return Launch(argv, extra_env, 1, degree, engine, notes)
    raise UserError(f"unknown serving engine {engine!r}; known: llama-runtime, vllm, nxd-inference")


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("train", "serve"):
        raise UserError("usage: python -m llama_runtime launch train|serve [ARGS]")
    env = os.environ
    given = detect(env)
    planner = plan_train if argv[0] == "train" else plan_serve
    launch = planner(argv[1:], env, given, sys.executable)
    record = {
        "event": "launch",
        "argv": launch.argv,
        "env": launch.env,
        "processes": launch.processes,
        "tensor_parallel": launch.tensor_parallel,
        "engine": launch.engine,
        "given": {
            "gpus": given.gpus,
            "neuron_devices": given.neuron_devices,
            "neuron_visible_cores": env.get("NEURON_RT_VISIBLE_CORES"),
            "cpus": given.cpus,
        },
        "notes": launch.notes,
    }
    print(json.dumps(record), flush=True)
    # Start-up is timed from here (imports, rendezvous, model and data are all after it).
    started = {contract.LAUNCHED_AT: f"{time.time():.3f}"}
    os.execvpe(launch.argv[0], launch.argv, {**env, **launch.env, **started})
