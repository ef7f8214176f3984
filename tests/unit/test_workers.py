"""llama_operator.workers: placed plans render to the pods, Services and RBAC the contract promises."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import pytest

from llama_operator.workers import (
    EFA_RESOURCE,
    GPU_RESOURCE,
    INF2,
    NEURON_RESOURCE,
    TRN1,
    TRN2,
    InferenceSettings,
    NeuronSettings,
    PodSecurity,
    Toleration,
    TrainingSettings,
    WorkerPlan,
    attempt_selector,
    job_selector,
    neuron_settings_for_instance_type,
    other_attempts_selector,
    render_pod,
    render_worker_objects,
    selector_string,
    worker_pod_names,
)
from llama_runtime import contract

pytestmark = pytest.mark.unit

RFC1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RFC1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PER_JOB_KINDS = {"ServiceAccount"}


def plan(**overrides: Any) -> WorkerPlan:
    base: dict[str, Any] = {
        "job_name": "pretrain",
        "namespace": "team-a",
        "uid": "0b9f6c1e-uid",
        "mode": "train",
        "backend": "cpu",
        "pool": "cpu-pool",
        "image": "registry.local/llama-worker-cpu:1",
        "node_names": ("node-a",),
        "model": "tiny",
    }
    return WorkerPlan(**(base | overrides))


def gpu_plan(**overrides: Any) -> WorkerPlan:
    return plan(
        **{
            "backend": "cuda",
            "pool": "p5",
            "node_names": ("gpu-1", "gpu-2"),
            "devices_per_pod": 8,
            "resource_name": GPU_RESOURCE,
            "efa_per_pod": 32,
            "node_selector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
            "tolerations": (Toleration(key="dedicated", value="gpu", effect="NoSchedule"),),
            "attempt": 2,
        }
        | overrides
    )


def neuron_plan(settings: NeuronSettings, devices: int, **overrides: Any) -> WorkerPlan:
    return plan(
        **{
            "backend": "neuron",
            "pool": "trn",
            "devices_per_pod": devices,
            "resource_name": NEURON_RESOURCE,
            "neuron": settings,
        }
        | overrides
    )


def inference_plan(**overrides: Any) -> WorkerPlan:
    return neuron_plan(
        INF2,
        1,
        **{
            "mode": "inference",
            "engine": "nxd-inference",
            "accelerator": "inferentia2",
            "pool": "inf2",
            "node_names": ("inf-1", "inf-1", "inf-2"),
            "inference": InferenceSettings(port=8080, max_batch=16, served_model_name="llama"),
            "checkpoint_uri": "pvc://models/llama/step-100",
        }
        | overrides,
    )


ALL_PLANS = {
    "cpu": plan,
    "gpu": gpu_plan,
    "trn1": lambda: neuron_plan(TRN1, 16),
    "trn2": lambda: neuron_plan(TRN2, 16, checkpoint_uri="pvc://ckpt/jobs/pretrain"),
    "inf2-serve": inference_plan,
}


def pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Pod"]


def container(pod: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only


def env_of(pod: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(pod)["env"]}


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Evaluates the subset of Kubernetes label-selector syntax the helpers produce."""
    for req in selector.split(","):
        if "!=" in req:
            key, value = req.split("!=")
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = req.split("=")
            if labels.get(key) != value:
                return False
        elif req not in labels:
            return False
    return True


def test_gpu_training_pods_request_gpus_and_efa_and_rendezvous_on_rank0() -> None:
    p = gpu_plan()
    objects = render_worker_objects(p)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "Service", "Pod", "Pod"]
    service = objects[3]
    assert service["metadata"]["name"] == "pretrain-a2-rdzv"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == attempt_selector("pretrain", 2)
    assert {port["port"] for port in service["spec"]["ports"]} == {29500, 9400}

    for rank, pod in enumerate(pods(objects)):
        spec, c = pod["spec"], container(pod)
        assert pod["metadata"]["name"] == f"pretrain-a2-{rank}"
        assert spec["hostname"] == pod["metadata"]["name"]
        assert spec["subdomain"] == service["metadata"]["name"]
        assert spec["restartPolicy"] == "Never"
        # The launcher adds --nproc_per_node from the GPUs the container sees (tests/unit/test_launch.py).
        assert c["command"] == [
            "python3",
            "-m",
            "llama_runtime",
            "launch",
            "train",
            "--nnodes=2",
            f"--node_rank={rank}",
            "--master_addr=pretrain-a2-0.pretrain-a2-rdzv",
            "--master_port=29500",
        ]
        assert c["resources"]["requests"] == {GPU_RESOURCE: "8", EFA_RESOURCE: "32"}
        assert c["resources"]["limits"] == c["resources"]["requests"]
        term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["nodeSelectorTerms"] == [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [p.node_names[rank]]}]}
        ]
        assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "p5.48xlarge"}
        assert spec["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
            {"key": EFA_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
        ]
        env = env_of(pod)
        assert env["FI_PROVIDER"] == "efa"
        assert env["FI_EFA_USE_DEVICE_RDMA"] == "1"
        assert env[contract.BACKEND] == "cuda"
        assert env[contract.DEVICES] == "8"
        assert env[contract.ATTEMPT] == "2"
        assert not any(name.startswith("NEURON_") for name in env)
        assert {p["containerPort"] for p in c["ports"]} == {29500, 9400}


@pytest.mark.parametrize(
    ("settings", "devices", "lnc"),
    [(TRN1, 16, None), (TRN1, 1, None), (TRN2, 16, "2"), (NeuronSettings(8, logical_nc_config=1), 4, "1")],
)
def test_neuron_training_leaves_the_cores_to_the_device_plugin(
    settings: NeuronSettings, devices: int, lnc: str | None
) -> None:
    (pod,) = pods(render_worker_objects(neuron_plan(settings, devices)))
    c, env = container(pod), env_of(pod)
    # The launcher counts the cores it is given; the pod names none and no process count.
    assert not any(arg.startswith("--nproc") for arg in c["command"])
    assert "NEURON_RT_VISIBLE_CORES" not in env and "NEURON_RT_NUM_CORES" not in env
    assert env[contract.DEVICES] == str(devices)
    assert env[contract.CORES_PER_DEVICE] == str(settings.logical_cores_per_device)
    # One node: rendezvous stays on the pod, no DNS needed.
    assert "--master_addr=127.0.0.1" in c["command"]
    assert c["resources"]["requests"] == {NEURON_RESOURCE: str(devices)}
    assert c["resources"]["limits"] == {NEURON_RESOURCE: str(devices)}
    assert env.get("NEURON_LOGICAL_NC_CONFIG") == lnc
    flags = env["NEURON_CC_FLAGS"].split()
    assert "--model-type=transformer" in flags
    assert (f"--logical-nc-config={lnc}" in flags) == (lnc is not None)
    assert pod["spec"]["tolerations"] == [
        {"key": NEURON_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert EFA_RESOURCE not in c["resources"]["requests"]
    assert "FI_PROVIDER" not in env


def test_neuron_compile_cache_lives_on_the_checkpoint_claim_or_in_an_emptydir() -> None:
    on_claim = env_of(render_pod(neuron_plan(TRN2, 16, checkpoint_uri="pvc://ckpt/jobs/x"), 0))
    assert on_claim[contract.NEURON_COMPILE_CACHE] == "/checkpoints/neuron-compile-cache"
    scratch = env_of(render_pod(neuron_plan(TRN1, 16), 0))
    assert scratch[contract.NEURON_COMPILE_CACHE] == "/cache/neuron-compile-cache"
    opted_out = NeuronSettings(compile_cache_on_checkpoint_volume=False)
    env = env_of(render_pod(neuron_plan(opted_out, 1, checkpoint_uri="pvc://ckpt/x"), 0))
    assert env[contract.NEURON_COMPILE_CACHE] == "/cache/neuron-compile-cache"


def test_inference_replicas_serve_behind_a_job_service_with_health_probes() -> None:
    p = inference_plan()
    objects = render_worker_objects(p)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "Service"] + ["Pod"] * 3
    service = objects[3]
    assert service["metadata"]["name"] == "pretrain"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    # Any attempt's ready replicas serve, so failover keeps the endpoint; no attempt in its selector.
    assert service["spec"]["selector"] == {**job_selector("pretrain"), "llamaop.io/role": "serve"}
    assert "llamaop.io/attempt" not in service["metadata"]["labels"]

    serve_pods = pods(objects)
    assert [pod["metadata"]["name"] for pod in serve_pods] == [
        "pretrain-a0-r0",
        "pretrain-a0-r1",
        "pretrain-a0-r2",
    ]
    for i, pod in enumerate(serve_pods):
        c, env = container(pod), env_of(pod)
        assert c["command"] == ["python3", "-m", "llama_runtime", "launch", "serve"]
        assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"] == {
                "path": "/health",
                "port": "http",
            }  # vLLM's, NxD Inference behind it
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800
        assert all(
            service["spec"]["selector"][k] == v
            for k, v in pod["metadata"]["labels"].items()
            if k in service["spec"]["selector"]
        )
        assert pod["metadata"]["labels"]["llamaop.io/role"] == "serve"
        assert pod["metadata"]["labels"]["llamaop.io/rank"] == str(i)
        assert "subdomain" not in pod["spec"]
        assert pod["spec"]["restartPolicy"] == "Always"
        values = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert values["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [p.node_names[i]]
        assert env[contract.MODE] == "inference"
        assert env[contract.PORT] == "8080"
        assert env[contract.MAX_BATCH] == "16"
        assert env[contract.SERVED_MODEL_NAME] == "llama"
        assert env[contract.CHECKPOINT_DIR] == "/checkpoints"
        assert env[contract.ENGINE] == "nxd-inference"
        assert env[contract.ACCELERATOR] == "inferentia2"
        assert "NEURON_RT_NUM_CORES" not in env and "NEURON_RT_VISIBLE_CORES" not in env
        assert env["NEURON_COMPILED_ARTIFACTS"] == "/checkpoints/neuron-compile-cache/nxd-inference/pretrain"
        assert contract.STEPS not in env and contract.METRICS_PORT not in env


def test_single_pod_training_gets_no_rendezvous_service() -> None:
    """One pod rendezvouses on 127.0.0.1: a headless Service (and its EndpointSlices) would be waste."""
    objects = render_worker_objects(plan(node_names=("node-a",)))
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "Pod"]
    (pod,) = pods(objects)
    assert "subdomain" not in pod["spec"]
    assert "--master_addr=127.0.0.1" in container(pod)["command"]
    two = render_worker_objects(plan(node_names=("node-a", "node-b")))
    assert [o["kind"] for o in two].count("Service") == 1
    assert all(p["spec"]["subdomain"] == "pretrain-a0-rdzv" for p in pods(two))


def test_cpu_training_requests_cpu_and_memory_and_no_accelerator() -> None:
    p = plan(cpu_request="2", memory_request="4Gi", cpu_limit="4")
    (pod,) = pods(render_worker_objects(p))
    c = container(pod)
    assert c["command"][:5] == ["python3", "-m", "llama_runtime", "launch", "train"]
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "4Gi"},
    }
    assert "tolerations" not in pod["spec"]
    assert "nodeSelector" not in pod["spec"]
    env = env_of(pod)
    assert env[contract.BACKEND] == "cpu"
    assert not any(name.startswith(("NEURON_", "FI_")) for name in env)


def test_training_env_follows_the_contract() -> None:
    p = plan(
        model={"hidden_size": 256, "num_layers": 2},
        model_dir="pvc://weights/llama3-1b",
        data_dir="/datasets/wiki",
        precision="bf16",
        seed=7,
        compile=False,
        log_level="debug",
        training=TrainingSettings(
            steps=100,
            seq_len=512,
            batch_size=32,
            micro_batch=4,
            learning_rate=3e-4,
            warmup_steps=10,
            checkpoint_every=50,
            checkpoint_keep=3,
            activation_checkpointing=True,
            progress_interval_seconds=5.0,
        ),
        extra_env={contract.STEPS: "7", "NCCL_DEBUG": "INFO"},
    )
    pod = render_pod(p, 0)
    env = env_of(pod)
    assert env[contract.JOB_NAME] == "pretrain"
    assert env[contract.JOB_NAMESPACE] == "team-a"
    assert env[contract.JOB_UID] == "0b9f6c1e-uid"
    assert env[contract.POD_NAME] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env[contract.POD_NAMESPACE] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    assert json.loads(env[contract.MODEL]) == {"hidden_size": 256, "num_layers": 2}
    assert env[contract.MODEL] == '{"hidden_size":256,"num_layers":2}'
    assert env[contract.MODEL_DIR] == "/model"
    assert env[contract.DATA_DIR] == "/datasets/wiki"
    assert env[contract.PRECISION] == "bf16"
    assert env[contract.SEED] == "7"
    assert env[contract.STEPS] == "7"  # extra_env wins
    assert env["NCCL_DEBUG"] == "INFO"
    assert env[contract.SEQ_LEN] == "512"
    assert env[contract.BATCH_SIZE] == "32"
    assert env[contract.MICRO_BATCH] == "4"
    assert float(env[contract.LEARNING_RATE]) == 3e-4
    assert env[contract.CHECKPOINT_EVERY] == "50"
    assert env[contract.WARMUP_STEPS] == "10"
    assert env[contract.CHECKPOINT_KEEP] == "3"
    assert env[contract.COMPILE] == "0"
    assert env[contract.LOG_LEVEL] == "debug"
    assert env[contract.ACTIVATION_CHECKPOINTING] == "1"
    assert env[contract.PROGRESS_INTERVAL] == "5.0"
    assert env[contract.METRICS_PORT] == "9400"
    assert env[contract.CHECKPOINT_DIR] == "/checkpoints"
    names = [e["name"] for e in container(pod)["env"]]
    assert len(names) == len(set(names))
    # No LLAMAOP_ name is invented here: the contract module is the one place they are written.
    assert {n for n in names if n.startswith(contract.PREFIX)} <= set(contract.ALL)
    model_mount = next(m for m in container(pod)["volumeMounts"] if m["name"] == "model")
    assert model_mount == {"name": "model", "mountPath": "/model", "subPath": "llama3-1b", "readOnly": True}
    model_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "model")
    assert model_volume["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}


def test_unset_training_settings_are_left_to_the_runtime() -> None:
    env = env_of(render_pod(plan(), 0))
    for name in (
        contract.STEPS,
        contract.LEARNING_RATE,
        contract.PRECISION,
        contract.MODEL_DIR,
        contract.DATA_DIR,
        contract.COMPILE,
        contract.WARMUP_STEPS,
    ):
        assert name not in env
    assert contract.ACTIVATION_CHECKPOINTING not in env


@pytest.mark.parametrize(
    ("uri", "env_dir", "volume", "sub_path"),
    [
        (
            "pvc://ckpt/team-a/pretrain",
            "/checkpoints",
            {"persistentVolumeClaim": {"claimName": "ckpt"}},
            "team-a/pretrain",
        ),
        ("pvc://ckpt", "/checkpoints", {"persistentVolumeClaim": {"claimName": "ckpt"}}, None),
        ("", "/checkpoints", {"emptyDir": {}}, None),
        ("/mnt/fsx/ckpt", "/mnt/fsx/ckpt", None, None),
    ],
)
def test_checkpoint_uri_becomes_a_mount_or_is_passed_as_is(
    uri: str, env_dir: str, volume: dict[str, Any] | None, sub_path: str | None
) -> None:
    pod = render_pod(plan(checkpoint_uri=uri), 0)
    assert env_of(pod)[contract.CHECKPOINT_DIR] == env_dir
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    if volume is None:
        assert "checkpoints" not in volumes and "checkpoints" not in mounts
    else:
        assert volumes["checkpoints"] == {"name": "checkpoints", **volume}
        assert mounts["checkpoints"]["mountPath"] == "/checkpoints"
        assert mounts["checkpoints"].get("subPath") == sub_path


def test_inference_without_checkpoint_mounts_none() -> None:
    pod = render_pod(inference_plan(checkpoint_uri=""), 0)
    assert contract.CHECKPOINT_DIR not in env_of(pod)
    assert "checkpoints" not in {v["name"] for v in pod["spec"]["volumes"]}


@pytest.mark.parametrize("name", sorted(ALL_PLANS))
def test_every_pod_is_admissible_under_restricted_pod_security(name: str) -> None:
    for pod in pods(render_worker_objects(ALL_PLANS[name]())):
        spec, c = pod["spec"], container(pod)
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["privileged"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden)
        assert all(set(v) - {"name"} <= {"emptyDir", "persistentVolumeClaim"} for v in spec["volumes"])
        assert all("hostPort" not in port for port in c["ports"])
        # A read-only root still needs writable scratch and caches.
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/cache", "/dev/shm"} <= mounts
        env = env_of(pod)
        assert env["HF_HOME"].startswith("/cache/")
        assert env["HOME"] == "/tmp"
        assert spec["automountServiceAccountToken"] is True
        assert spec["serviceAccountName"] == "pretrain-worker"


def test_security_settings_are_configurable() -> None:
    security = PodSecurity(
        run_as_user=2000, run_as_group=3000, fs_group=4000, read_only_root_filesystem=False
    )
    pod = render_pod(plan(security=security, shm_size="8Gi"), 0)
    assert pod["spec"]["securityContext"]["runAsUser"] == 2000
    assert pod["spec"]["securityContext"]["runAsGroup"] == 3000
    assert pod["spec"]["securityContext"]["fsGroup"] == 4000
    assert container(pod)["securityContext"]["readOnlyRootFilesystem"] is False
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


@pytest.mark.parametrize("name", sorted(ALL_PLANS))
def test_role_may_only_get_and_patch_exactly_this_attempts_pods(name: str) -> None:
    p = ALL_PLANS[name]()
    objects = render_worker_objects(p)
    by_kind = {o["kind"]: o for o in objects if o["kind"] != "Pod"}
    sa, role, binding = by_kind["ServiceAccount"], by_kind["Role"], by_kind["RoleBinding"]
    pod_names = [pod["metadata"]["name"] for pod in pods(objects)]
    assert pod_names == worker_pod_names(p)
    assert len(set(pod_names)) == len(pod_names) == p.replicas
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "resourceNames": pod_names, "verbs": ["get", "patch"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "team-a"}
    ]
    assert sa["automountServiceAccountToken"] is False
    assert all(pod["spec"]["serviceAccountName"] == sa["metadata"]["name"] for pod in pods(objects))


@pytest.mark.parametrize("name", sorted(ALL_PLANS))
def test_every_object_is_owned_by_the_llamajob_and_labelled(name: str) -> None:
    p = ALL_PLANS[name]()
    role = "train" if p.mode == "train" else "serve"
    for obj in render_worker_objects(p):
        meta = obj["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "llamaop.io/v1alpha1",
                "kind": "LlamaJob",
                "name": "pretrain",
                "uid": "0b9f6c1e-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "llama-worker"
        assert labels["app.kubernetes.io/managed-by"] == "llama-operator"
        assert labels["llamaop.io/job"] == "pretrain"
        assert labels["llamaop.io/role"] == role
        per_job = obj["kind"] in PER_JOB_KINDS or (obj["kind"] == "Service" and p.mode == "inference")
        if per_job:
            assert "llamaop.io/attempt" not in labels and "llamaop.io/pool" not in labels
        else:
            assert labels["llamaop.io/attempt"] == str(p.attempt)
            assert labels["llamaop.io/pool"] == p.pool
        assert ("llamaop.io/rank" in labels) == (obj["kind"] == "Pod")


def test_selectors_separate_attempts_and_spare_per_job_objects() -> None:
    old = render_worker_objects(gpu_plan(attempt=1))
    new = render_worker_objects(gpu_plan(attempt=2, pool="p4d"))
    stale = other_attempts_selector("pretrain", 2)
    assert stale == (
        "app.kubernetes.io/managed-by=llama-operator,llamaop.io/job=pretrain,"
        "llamaop.io/attempt,llamaop.io/attempt!=2"
    )
    assert {o["metadata"]["name"] for o in old if matches(stale, o["metadata"]["labels"])} == {
        "pretrain-a1-worker",
        "pretrain-a1-rdzv",
        "pretrain-a1-0",
        "pretrain-a1-1",
    }
    assert not any(matches(stale, o["metadata"]["labels"]) for o in new)
    whole_job = selector_string(job_selector("pretrain"))
    assert all(matches(whole_job, o["metadata"]["labels"]) for o in old + new)
    assert not any(
        matches(whole_job, o["metadata"]["labels"]) for o in render_worker_objects(plan(job_name="other"))
    )
    this_attempt = selector_string(attempt_selector("pretrain", 2))
    assert [o["metadata"]["name"] for o in new if matches(this_attempt, o["metadata"]["labels"])] == [
        "pretrain-a2-worker",
        "pretrain-a2-worker",
        "pretrain-a2-rdzv",
        "pretrain-a2-0",
        "pretrain-a2-1",
    ]


LONG_NAME = "team." + "very-long-llama-job-name-" * 9 + "x"


@pytest.mark.parametrize(
    "job_name",
    [LONG_NAME, LONG_NAME[:-1] + "y", "7b.finetune", "a" * 63, "llama3.8b"],
)
def test_names_are_dns_safe_and_deterministic(job_name: str) -> None:
    p = gpu_plan(job_name=job_name, node_names=tuple(f"node-{i}" for i in range(12)), attempt=123)
    objects = render_worker_objects(p)
    assert objects == render_worker_objects(p)
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63
        # Service names must start with a letter; pod names double as hostnames.
        assert RFC1035_LABEL.match(name), name
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63 and LABEL_VALUE.match(value), value
    for pod in pods(objects):
        assert RFC1123_LABEL.match(pod["spec"]["hostname"]) and RFC1123_LABEL.match(pod["spec"]["subdomain"])
    last = pods(objects)[-1]["metadata"]["name"]
    assert last.endswith("-a123-11")
    (master,) = [
        a.removeprefix("--master_addr=") for a in container(pods(objects)[0])["command"] if "master_addr" in a
    ]
    assert master == f"{pods(objects)[0]['spec']['hostname']}.{pods(objects)[0]['spec']['subdomain']}"


def test_long_names_that_share_a_prefix_stay_distinct() -> None:
    a = render_worker_objects(plan(job_name=LONG_NAME))
    b = render_worker_objects(plan(job_name=LONG_NAME[:-1] + "y"))
    assert {o["metadata"]["name"] for o in a}.isdisjoint(o["metadata"]["name"] for o in b)
    assert a[0]["metadata"]["labels"]["llamaop.io/job"] != b[0]["metadata"]["labels"]["llamaop.io/job"]
    # Names changed only by sanitising keep apart too ("a.b" vs "a-b").
    dotted = render_pod(plan(job_name="llama3.8b"), 0)["metadata"]["name"]
    dashed = render_pod(plan(job_name="llama3-8b"), 0)["metadata"]["name"]
    assert dotted != dashed and dashed == "llama3-8b-a0-0"


def test_rendered_manifests_are_fresh_objects() -> None:
    p = gpu_plan()
    first = render_worker_objects(p)
    pristine = copy.deepcopy(first)
    first[4]["spec"]["nodeSelector"]["mutated"] = "yes"
    first[4]["metadata"]["labels"]["mutated"] = "yes"
    assert render_worker_objects(p) == pristine
    assert dict(p.node_selector) == {"node.kubernetes.io/instance-type": "p5.48xlarge"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": "neuron", "devices_per_pod": 1, "resource_name": NEURON_RESOURCE}, "NeuronSettings"),
        ({"resource_name": GPU_RESOURCE}, "cpu backend"),
        ({"backend": "cuda", "resource_name": GPU_RESOURCE}, "devices_per_pod"),
        ({"backend": "cuda", "devices_per_pod": 1}, "resource_name"),
        (
            {"backend": "neuron", "devices_per_pod": 2, "resource_name": GPU_RESOURCE, "neuron": TRN1},
            NEURON_RESOURCE,
        ),
        (
            {
                "node_names": ("n1", "n1"),
                "backend": "cuda",
                "devices_per_pod": 1,
                "resource_name": GPU_RESOURCE,
            },
            "distinct",
        ),
        ({"node_names": ()}, "at least one"),
        ({"checkpoint_uri": "relative/ckpt"}, "checkpoint_uri"),
        # The runtime reads plain paths: an object-store URI would be mangled into a local path.
        ({"checkpoint_uri": "s3://bucket/ckpt"}, "checkpoint_uri"),
        ({"checkpoint_uri": "pvc://ckpt/../other"}, "sub path"),
        ({"model_dir": "pvc://Bad_Claim/x"}, "PersistentVolumeClaim"),
        ({"job_name": "Bad_Name"}, "job name"),
        ({"namespace": "a.b"}, "namespace"),
        ({"uid": ""}, "uid"),
        ({"attempt": -1}, "attempt"),
        ({"extra_env": {"1BAD": "x"}}, "environment"),
        ({"training": TrainingSettings(rdzv_port=0)}, "port"),
    ],
)
def test_invalid_plans_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        plan(**overrides)


def test_inference_replicas_may_share_a_node_and_render_pod_checks_the_rank() -> None:
    p = inference_plan()
    assert p.replicas == 3
    with pytest.raises(ValueError, match="rank"):
        render_pod(p, 3)
    with pytest.raises(ValueError):
        PodSecurity(run_as_user=0)
    with pytest.raises(ValueError):
        NeuronSettings(physical_cores_per_device=8, logical_nc_config=3)


@pytest.mark.parametrize(
    ("instance_type", "expected", "cores"),
    [
        ("trn1.32xlarge", TRN1, 2),
        ("trn1n.32xlarge", TRN1, 2),
        ("inf2.48xlarge", INF2, 2),
        ("trn2.48xlarge", TRN2, 4),
        ("trn2u.48xlarge", TRN2, 4),
    ],
)
def test_neuron_layout_by_instance_type(instance_type: str, expected: NeuronSettings, cores: int) -> None:
    settings = neuron_settings_for_instance_type(instance_type)
    assert settings == expected
    assert settings.logical_cores_per_device == cores


def test_unknown_neuron_instance_type_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("p5.48xlarge")):
        neuron_settings_for_instance_type("p5.48xlarge")


def test_toleration_round_trips_the_kubernetes_form() -> None:
    raw = {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
    assert Toleration.from_manifest(raw).to_manifest() == raw
    with pytest.raises(ValueError):
        Toleration(key="a", operator="Exists", value="b")
    with pytest.raises(ValueError):
        Toleration(operator="Equal")
    # The pool already tolerating the accelerator taint is not repeated.
    tol = Toleration(key=NEURON_RESOURCE, operator="Exists", effect="NoSchedule")
    pod = render_pod(neuron_plan(TRN1, 1, tolerations=(tol,)), 0)
    assert pod["spec"]["tolerations"] == [tol.to_manifest()]


def test_plans_are_immutable() -> None:
    p = plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.attempt = 3  # type: ignore[misc]


KINDS = {
    "Pod": "V1Pod",
    "Service": "V1Service",
    "ServiceAccount": "V1ServiceAccount",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
}


@pytest.mark.parametrize("name", sorted(ALL_PLANS))
def test_manifests_round_trip_through_the_kubernetes_models(name: str) -> None:
    """A misspelt field would be dropped by the client's models, so the round trip would differ."""
    client = pytest.importorskip("kubernetes.client")
    api = client.ApiClient()
    for obj in render_worker_objects(ALL_PLANS[name]()):
        model = api._ApiClient__deserialize(copy.deepcopy(obj), KINDS[obj["kind"]])  # type: ignore[attr-defined]
        assert api.sanitize_for_serialization(model) == obj


def test_cpu_training_ranks_may_share_a_node() -> None:
    """On cpu pools a device is a worker slot: two ranks of one job may run as two pods on one node."""
    pods = [m for m in render_worker_objects(plan(node_names=("n1", "n1"))) if m["kind"] == "Pod"]
    assert len({p["metadata"]["name"] for p in pods}) == 2
    assert "--nnodes=2" in " ".join(pods[0]["spec"]["containers"][0]["command"])
