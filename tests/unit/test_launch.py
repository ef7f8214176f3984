"""From a placed job to the processes a worker starts: the pod the operator renders, then what the
runtime's launcher (`python -m llama_runtime launch`) runs inside it on what the device plugins gave.

These are the exact command lines per engine; vLLM on CUDA and Neuron cannot run here, so this (and
hack/bench/gpu.sh on a lent GPU) is how they are tested.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llama_operator.workers import (
    GPU_RESOURCE,
    INF2,
    NEURON_RESOURCE,
    TRN1,
    TRN2,
    InferenceSettings,
    NeuronSettings,
    WorkerPlan,
    render_pod,
    render_worker_objects,
)
from llama_runtime import contract
from llama_runtime.capabilities import capability
from llama_runtime.errors import UserError
from llama_runtime.launch import Given, detect, hardware, parse_cores, plan_serve, plan_train

pytestmark = pytest.mark.unit

PY = "/usr/bin/python3"
TORCHRUN = [PY, "-m", "torch.distributed.run"]


def base(**overrides: Any) -> WorkerPlan:
    fields: dict[str, Any] = {
        "job_name": "chat",
        "namespace": "team-a",
        "uid": "uid-1",
        "mode": "inference",
        "backend": "cpu",
        "pool": "pool",
        "image": "worker:1",
        "node_names": ("node-a",),
        "model": "llama3-8b",
        "inference": InferenceSettings(port=8000, max_batch=16, context_length=4096),
    }
    return WorkerPlan(**(fields | overrides))


def container_env(pod: dict[str, Any], **plugin: str) -> dict[str, str]:
    """The environment the container starts with: the pod's values, the downward API's, the plugin's."""
    (c,) = pod["spec"]["containers"]
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "resourceFieldRef" in e["valueFrom"]:  # the kubelet rounds requests.cpu up to whole cores
            cpu = c["resources"]["requests"][e["valueFrom"]["resourceFieldRef"]["resource"].split(".")[1]]
            env[e["name"]] = str(-(-int(cpu.removesuffix("m")) // 1000)) if cpu.endswith("m") else cpu
        else:
            env[e["name"]] = pod["metadata"][e["valueFrom"]["fieldRef"]["fieldPath"].split(".")[1]]
    return env | plugin


def command(pod: dict[str, Any]) -> list[str]:
    (c,) = pod["spec"]["containers"]
    return list(c["command"])


def weights(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return str(tmp_path)


def test_vllm_on_a_cuda_pool_gets_the_placements_gpus_as_tensor_parallel_size(tmp_path: Path) -> None:
    plan = base(
        backend="cuda",
        engine="vllm",
        accelerator="h100",
        devices_per_pod=4,
        resource_name=GPU_RESOURCE,
        model_dir="/weights/llama3-8b",
    )
    pod = render_pod(plan, 0)
    (c,) = pod["spec"]["containers"]
    assert command(pod) == ["python3", "-m", "llama_runtime", "launch", "serve"]
    assert c["resources"]["limits"] == {GPU_RESOURCE: "4"}
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "/health"
    }
    env = container_env(pod, CUDA_VISIBLE_DEVICES="0,1,2,3") | {contract.MODEL_DIR: weights(tmp_path)}
    assert (env[contract.ENGINE], env[contract.DEVICES], env["VLLM_NO_USAGE_STATS"]) == ("vllm", "4", "1")
    launch = plan_serve([], env, Given(gpus=4, cpus=48), PY)
    assert launch.argv == [
        "vllm", "serve", str(tmp_path), "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "4", "--served-model-name", "chat",
        "--max-num-seqs", "16", "--dtype", "bfloat16", "--max-model-len", "4096",
    ]  # fmt: skip
    assert capability("nvidia", "h100").serving.engine == "vllm"  # type: ignore[union-attr]
    # A container that was given other than what was placed is refused, not half-used.
    with pytest.raises(UserError, match="placement gave this pod 4 GPUs but the container sees 2"):
        plan_serve([], env, Given(gpus=2), PY)


def two_replicas_on_one_inf2_48xlarge() -> list[dict[str, Any]]:
    plan = base(
        backend="neuron",
        engine="nxd-inference",
        accelerator="inferentia2",
        node_names=("inf2-a", "inf2-a"),
        devices_per_pod=6,
        resource_name=NEURON_RESOURCE,
        neuron=INF2,
        model_dir="pvc://weights/llama3-70b",
    )
    return [o for o in render_worker_objects(plan) if o["kind"] == "Pod"]


def test_two_serving_replicas_sharing_an_inf2_48xlarge_claim_no_specific_cores(tmp_path: Path) -> None:
    a, b = two_replicas_on_one_inf2_48xlarge()
    env_a, env_b = container_env(a), container_env(b)
    for env in (env_a, env_b):
        # The device plugin and scheduler extension pick the devices and set these; the pod must not.
        assert "NEURON_RT_VISIBLE_CORES" not in env and "NEURON_RT_NUM_CORES" not in env
        assert (env[contract.DEVICES], env[contract.CORES_PER_DEVICE]) == ("6", "2")
    assert {k: v for k, v in env_a.items() if k != contract.POD_NAME} == {
        k: v for k, v in env_b.items() if k != contract.POD_NAME
    }
    for pod in (a, b):
        (c,) = pod["spec"]["containers"]
        assert c["resources"]["requests"] == {NEURON_RESOURCE: "6"}
        affinity = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert affinity["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["inf2-a"]
    # As the scheduler extension hands them out: devices 0-5 (cores 0-11) and 6-11 (cores 12-23).
    model = weights(tmp_path)
    launches = [
        plan_serve(
            [],
            container_env(pod, NEURON_RT_VISIBLE_CORES=cores) | {contract.MODEL_DIR: model},
            Given(neuron_devices=6, neuron_cores=parse_cores(cores), cpus=96),
            PY,
        )
        for pod, cores in ((a, "0-11"), (b, "12-23"))
    ]
    for launch in launches:
        assert launch.argv[:3] == ["vllm", "serve", model]
        assert launch.argv[launch.argv.index("--tensor-parallel-size") + 1] == "12"
        assert launch.engine == "nxd-inference"
        # The started server inherits the container's NEURON_RT_VISIBLE_CORES unchanged.
        assert not any(k.startswith("NEURON_RT_") for k in launch.env)
    assert launches[0].argv == launches[1].argv


def neuron_training(
    accelerator: str, settings: NeuronSettings, cores: str
) -> tuple[list[str], dict[str, str]]:
    """The launcher's arguments and the container's environment of a 16-device Neuron training pod."""
    plan = base(
        mode="train",
        backend="neuron",
        accelerator=accelerator,
        devices_per_pod=16,
        resource_name=NEURON_RESOURCE,
        neuron=settings,
        inference=InferenceSettings(),
    )
    pod = render_pod(plan, 0)
    return command(pod)[5:], container_env(pod, NEURON_RT_VISIBLE_CORES=cores)


def test_neuron_training_starts_what_the_capability_row_says_per_core_or_per_pod() -> None:
    # trainium2 runs TorchNeuron, one process per (logical) core; trainium1 the XLA line's row.
    args, env = neuron_training("trainium2", TRN2, "0-63")
    assert capability("neuron", "trainium2").training.processes == "per-core"  # type: ignore[union-attr]
    launch = plan_train(args, env, Given(neuron_devices=16, neuron_cores=tuple(range(64))), PY)
    assert launch.argv == [
        *TORCHRUN, "--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1", "--master_port=29500",
        "--nproc_per_node=64", "-m", "llama_runtime", "train",
    ]  # fmt: skip
    args, env = neuron_training("trainium1", TRN1, "0-31")
    row = capability("neuron", "trainium1").training
    assert row is not None
    want = {"per-pod": 1, "per-core": 32, "per-device": 16}[row.processes]
    launch = plan_train(args, env, Given(neuron_devices=16, neuron_cores=tuple(range(32))), PY)
    assert f"--nproc_per_node={want}" in launch.argv


def test_cuda_training_runs_one_process_per_gpu_it_sees() -> None:
    plan = base(
        mode="train",
        backend="cuda",
        accelerator="h100",
        node_names=("gpu-1", "gpu-2"),
        devices_per_pod=8,
        resource_name=GPU_RESOURCE,
        inference=InferenceSettings(),
    )
    pod = render_pod(plan, 1)
    launch = plan_train(command(pod)[5:], container_env(pod), Given(gpus=8, cpus=192), PY)
    assert launch.argv == [
        *TORCHRUN, "--nnodes=2", "--node_rank=1", "--master_addr=chat-a0-0.chat-a0-rdzv",
        "--master_port=29500", "--nproc_per_node=8", "-m", "llama_runtime", "train",
    ]  # fmt: skip
    assert launch.env == {"OMP_NUM_THREADS": "24"}
    with pytest.raises(UserError, match="sets the process count"):
        plan_train(["--nproc_per_node=2"], container_env(pod), Given(gpus=8), PY)


def test_cpu_serving_spans_the_pods_slots_with_tensor_parallelism(tmp_path: Path) -> None:
    plan = base(accelerator="xeon-8vcpu", devices_per_pod=2, cpu_request="16000m")
    pod = render_pod(plan, 0)
    (c,) = pod["spec"]["containers"]
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = container_env(pod)
    assert env[contract.ENGINE] == "llama-runtime"
    launch = plan_serve([], env, Given(cpus=16), PY)
    assert launch.argv == [
        *TORCHRUN, "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "llama_runtime", "serve",
    ]  # fmt: skip
    assert (launch.tensor_parallel, launch.env) == (2, {"OMP_NUM_THREADS": "8"})
    # The pod's CPU request (downward API) bounds the threads when the node has more cores.
    assert env[contract.CPUS] == "16"
    assert detect(env, tmp_path / "dev", tmp_path / "cgroup").cpus <= 16
    one = plan_serve([], container_env(render_pod(base(devices_per_pod=1), 0)), Given(cpus=8), PY)
    assert one.argv == [PY, "-m", "llama_runtime", "serve"] and one.tensor_parallel == 1


@pytest.mark.parametrize(
    ("value", "cores"),
    [("3", (3,)), ("0-11", tuple(range(12))), ("2,3", (2, 3)), ("0-1, 8-9", (0, 1, 8, 9))],
)
def test_visible_cores_parse_as_the_neuron_runtime_reads_them(value: str, cores: tuple[int, ...]) -> None:
    assert parse_cores(value) == cores


@pytest.mark.parametrize("value", ["a", "3-1", "0-3,2"])
def test_bad_visible_cores_are_refused(value: str) -> None:
    with pytest.raises(UserError, match="NEURON_RT_VISIBLE_CORES"):
        parse_cores(value)


def test_detect_counts_device_nodes_and_the_cgroup_cpu_limit(tmp_path: Path) -> None:
    dev, cgroup = tmp_path / "dev", tmp_path / "cgroup"
    dev.mkdir()
    cgroup.mkdir()
    for name in ("neuron6", "neuron7", "nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "neuron"):
        (dev / name).touch()
    (cgroup / "cpu.max").write_text("1200000 100000\n")
    given = detect({"NEURON_RT_VISIBLE_CORES": "12-15"}, dev, cgroup)
    assert (given.gpus, given.neuron_devices, given.neuron_cores) == (2, 2, (12, 13, 14, 15))
    assert given.cpus <= 12
    assert detect({"CUDA_VISIBLE_DEVICES": "GPU-a"}, dev, cgroup).gpus == 1
    assert detect({contract.CPUS: "1"}, dev, cgroup).cpus == 1
    assert detect({}, tmp_path / "none", cgroup).neuron_cores is None


def test_a_neuron_container_given_other_cores_than_placed_is_refused() -> None:
    env = {contract.DEVICES: "6", contract.CORES_PER_DEVICE: "2"}
    assert hardware("neuron", env, Given(neuron_devices=6, neuron_cores=tuple(range(12, 24)))).cores == 12
    with pytest.raises(UserError, match=r"6 Neuron devices \(12 cores\) but the container may use 4"):
        hardware("neuron", env, Given(neuron_devices=2, neuron_cores=(0, 1, 2, 3)))
    with pytest.raises(UserError, match="no /dev/neuron"):
        hardware("neuron", env, Given())


def test_the_job_status_and_every_candidate_name_the_engine_of_their_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from llama_operator import cli

    root = Path(__file__).resolve().parents[2]
    job = str(root / "examples" / "serve-llama3-70b.yaml")
    assert cli.main(["plan", job, "--json", "--now", "2026-06-01T00:00:00Z"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    engines = {"cpu": "llama-runtime", "nvidia": "vllm", "neuron": "nxd-inference"}
    assert status["engine"] == engines[status["family"]]
    by_accelerator = {
        "xeon-8vcpu": "llama-runtime",
        "h100": "vllm",
        "a10g": "vllm",
        "inferentia2": "nxd-inference",
    }
    seen = set()
    for row in status["candidates"]:
        if row["accelerator"] in by_accelerator:
            assert row["note"].endswith(f"served by {by_accelerator[row['accelerator']]}"), row
            seen.add(row["accelerator"])
    assert seen == set(by_accelerator)
    pools = str(root / "examples" / "pools" / "g6e-48xl-od.yaml")
    assert cli.main(["plan", job, "--json", "--pools", pools, "--now", "2026-06-01T00:00:00Z"]) == 0
    (on_gpu,) = json.loads(capsys.readouterr().out)
    assert (on_gpu["outcome"], on_gpu["accelerator"], on_gpu["engine"]) == ("placed", "l40s", "vllm")


def test_launch_needs_a_concrete_backend() -> None:
    with pytest.raises(UserError, match="cpu, cuda or neuron, not 'auto'"):
        plan_serve([], {contract.BACKEND: "auto"}, Given(), PY)
