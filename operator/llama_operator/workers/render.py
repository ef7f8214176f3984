"""WorkerPlan -> plain Kubernetes manifests (dicts) of the worker pods and everything around them.

Pure: the controller sends the result to the API server. Objects come back in creation order (the
ServiceAccount must exist before pods that name it are admitted). Every call builds fresh dicts, so a
caller may mutate what it gets.
"""

from __future__ import annotations

import math
from typing import Any

from .env import (
    CACHE_DIR,
    CHECKPOINT_MOUNT,
    DATA_MOUNT,
    MODEL_MOUNT,
    SHM_DIR,
    TMP_DIR,
    health_path,
    serve_command,
    train_command,
    worker_env,
)
from .names import (
    APP_NAME,
    LABEL_APP_NAME,
    LABEL_ATTEMPT,
    LABEL_POOL,
    LABEL_PROBE,
    LABEL_RANK,
    LABEL_ROLE,
    ROLE_SERVE,
    ROLE_TRAIN,
    attempt_selector,
    inference_service_name,
    job_selector,
    label_value,
    rendezvous_service_name,
    role_name,
    serve_pod_name,
    service_account_name,
    train_pod_name,
)
from .plan import EFA_RESOURCE, ClaimRef, WorkerPlan, parse_pvc_uri

Manifest = dict[str, Any]

OWNER_API_VERSION = "llamaop.io/v1alpha1"
OWNER_KIND = "LlamaJob"
CONTAINER_NAME = "worker"


def owner_reference(plan: WorkerPlan) -> Manifest:
    return {
        "apiVersion": OWNER_API_VERSION,
        "kind": OWNER_KIND,
        "name": plan.job_name,
        "uid": plan.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def worker_role(plan: WorkerPlan) -> str:
    """Value of the llamaop.io/role label: train or serve."""
    return ROLE_TRAIN if plan.mode == "train" else ROLE_SERVE


def job_labels(plan: WorkerPlan) -> dict[str, str]:
    """Labels of per-job objects. No attempt or pool label: both change on failover, these objects don't."""
    return {LABEL_APP_NAME: APP_NAME, **job_selector(plan.job_name), LABEL_ROLE: worker_role(plan)}


def attempt_labels(plan: WorkerPlan) -> dict[str, str]:
    """Labels of per-attempt objects (a probe attempt's also say so)."""
    labels = {**job_labels(plan), LABEL_ATTEMPT: str(plan.attempt), LABEL_POOL: label_value(plan.pool)}
    if plan.probe:
        labels[LABEL_PROBE] = "true"
    return labels


def pod_labels(plan: WorkerPlan, rank: int) -> dict[str, str]:
    return {**attempt_labels(plan), LABEL_RANK: str(rank)}


def pod_name(plan: WorkerPlan, rank: int) -> str:
    """Training rank `rank`, or inference replica `rank`."""
    if plan.mode == "train":
        return train_pod_name(plan.job_name, plan.attempt, rank)
    return serve_pod_name(plan.job_name, plan.attempt, rank)


def worker_pod_names(plan: WorkerPlan) -> list[str]:
    """Names of the pods this attempt creates, in rank (replica) order."""
    return [pod_name(plan, rank) for rank in range(plan.replicas)]


def _metadata(plan: WorkerPlan, name: str, labels: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": plan.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(plan)],
    }


def render_service_account(plan: WorkerPlan) -> Manifest:
    # Off by default on the account: only worker pods, which ask for it explicitly, get its token.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(plan, service_account_name(plan.job_name), job_labels(plan)),
        "automountServiceAccountToken": False,
    }


def render_role(plan: WorkerPlan) -> Manifest:
    """May get and patch this attempt's pods, by name, and nothing else (rank 0's progress annotation)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(plan, role_name(plan.job_name, plan.attempt), attempt_labels(plan)),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": worker_pod_names(plan),
                "verbs": ["get", "patch"],
            }
        ],
    }


def render_role_binding(plan: WorkerPlan) -> Manifest:
    name = role_name(plan.job_name, plan.attempt)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(plan, name, attempt_labels(plan)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_account_name(plan.job_name),
                "namespace": plan.namespace,
            }
        ],
    }


def render_rendezvous_service(plan: WorkerPlan) -> Manifest:
    """Headless Service that gives every training pod the DNS name `{pod}.{service}`.

    Not-ready addresses are published because torchrun rendezvous happens before anything is ready.
    """
    name = rendezvous_service_name(plan.job_name, plan.attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(plan, name, attempt_labels(plan)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": attempt_selector(plan.job_name, plan.attempt),
            "ports": [
                _service_port("rdzv", plan.training.rdzv_port, plan.training.rdzv_port),
                _service_port("metrics", plan.training.metrics_port, plan.training.metrics_port),
            ],
        },
    }


def render_inference_service(plan: WorkerPlan) -> Manifest:
    """The job's stable endpoint: ready serving replicas of any attempt, so failover keeps the name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(plan, inference_service_name(plan.job_name), job_labels(plan)),
        "spec": {
            "type": "ClusterIP",
            "selector": {**job_selector(plan.job_name), LABEL_ROLE: ROLE_SERVE},
            "ports": [_service_port("http", plan.inference.port, "http")],
        },
    }


def _service_port(name: str, port: int, target: int | str) -> Manifest:
    return {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}


def pod_security_context(plan: WorkerPlan) -> Manifest:
    s = plan.security
    return {
        "runAsNonRoot": True,
        "runAsUser": s.run_as_user,
        "runAsGroup": s.run_as_group,
        "fsGroup": s.fs_group,
        # Skips the recursive chown of a large checkpoint volume when ownership is already right.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(plan: WorkerPlan) -> Manifest:
    # Accelerators arrive through device-plugin resource requests, so nothing privileged is needed.
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": plan.security.read_only_root_filesystem,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(plan: WorkerPlan) -> Manifest:
    """Requests and limits; extended resources (accelerators, EFA) must have requests == limits."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if plan.cpu_request:
        requests["cpu"] = plan.cpu_request
    if plan.cpu_limit:
        limits["cpu"] = plan.cpu_limit
    if plan.memory_request:
        requests["memory"] = limits["memory"] = plan.memory_request
    if plan.resource_name:
        requests[plan.resource_name] = limits[plan.resource_name] = str(plan.devices_per_pod)
    if plan.efa_per_pod > 0:
        requests[EFA_RESOURCE] = limits[EFA_RESOURCE] = str(plan.efa_per_pod)
    out: Manifest = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def tolerations(plan: WorkerPlan) -> list[Manifest]:
    """The pool's tolerations, plus one per requested extended resource.

    The latter is what the ExtendedResourceToleration admission plugin adds where it is enabled: nodes
    tainted with their accelerator's resource name admit pods that request it, on any cluster.
    """
    out = [t.to_manifest() for t in plan.tolerations]
    requested = [r for r in (plan.resource_name, EFA_RESOURCE if plan.efa_per_pod > 0 else None) if r]
    for resource in requested:
        implied = {"key": resource, "operator": "Exists", "effect": "NoSchedule"}
        if implied not in out:
            out.append(implied)
    return out


def node_affinity(node_name: str) -> Manifest:
    """Binds the pod to exactly the node the planner promised its devices on.

    `matchFields` on metadata.name (what DaemonSets use) rather than the kubernetes.io/hostname label:
    the label is not always equal to the node name and fake nodes may not carry it.
    """
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _claim_volume(name: str, ref: ClaimRef, read_only: bool) -> Manifest:
    source: Manifest = {"claimName": ref.claim}
    if read_only:
        source["readOnly"] = True
    return {"name": name, "persistentVolumeClaim": source}


def _mount(name: str, path: str, sub_path: str = "", read_only: bool = False) -> Manifest:
    mount: Manifest = {"name": name, "mountPath": path}
    if sub_path:
        mount["subPath"] = sub_path
    if read_only:
        mount["readOnly"] = True
    return mount


def volumes_and_mounts(plan: WorkerPlan) -> tuple[list[Manifest], list[Manifest]]:
    """Writable scratch for a read-only root (/tmp, /cache, /dev/shm) plus the job's storage."""
    shm: Manifest = {"medium": "Memory"}
    if plan.shm_size:
        shm["sizeLimit"] = plan.shm_size
    volumes: list[Manifest] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "dshm", "emptyDir": shm},
    ]
    mounts = [_mount("tmp", TMP_DIR), _mount("cache", CACHE_DIR), _mount("dshm", SHM_DIR)]

    checkpoint = parse_pvc_uri(plan.checkpoint_uri)
    if checkpoint:
        volumes.append(_claim_volume("checkpoints", checkpoint, read_only=False))
        mounts.append(_mount("checkpoints", CHECKPOINT_MOUNT, checkpoint.sub_path))
    elif not plan.checkpoint_uri and plan.mode == "train" and not plan.probe:
        # Lost with the pod: enough for a run that is not meant to resume elsewhere.
        volumes.append({"name": "checkpoints", "emptyDir": {}})
        mounts.append(_mount("checkpoints", CHECKPOINT_MOUNT))

    for name, uri, path in (("model", plan.model_dir, MODEL_MOUNT), ("data", plan.data_dir, DATA_MOUNT)):
        ref = parse_pvc_uri(uri)
        if ref:
            volumes.append(_claim_volume(name, ref, read_only=True))
            mounts.append(_mount(name, path, ref.sub_path, read_only=True))
    return volumes, mounts


def _probe(path: str, period: int, timeout: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def render_pod(plan: WorkerPlan, rank: int) -> Manifest:
    """Training rank `rank` or inference replica `rank`, pinned to plan.node_names[rank]."""
    if not 0 <= rank < plan.replicas:
        raise ValueError(f"rank {rank} is outside 0..{plan.replicas - 1}")
    name = pod_name(plan, rank)
    volumes, mounts = volumes_and_mounts(plan)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": plan.image,
        "imagePullPolicy": plan.image_pull_policy,
    }
    spec: Manifest = {}
    if plan.mode == "train":
        container["command"] = train_command(plan, rank)
        container["ports"] = [
            {"name": "rdzv", "containerPort": plan.training.rdzv_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": plan.training.metrics_port, "protocol": "TCP"},
        ]
        # The operator decides retries and failover: a failed rank fails the attempt.
        spec["restartPolicy"] = "Never"
        spec["hostname"] = name
        if needs_rendezvous_service(plan):
            spec["subdomain"] = rendezvous_service_name(plan.job_name, plan.attempt)
    else:
        container["command"] = serve_command(plan)
        container["ports"] = [{"name": "http", "containerPort": plan.inference.port, "protocol": "TCP"}]
        startup_failures = max(1, math.ceil(plan.inference.startup_timeout_seconds / 10))
        path = health_path(plan)
        container["startupProbe"] = _probe(path, 10, 5, startup_failures)
        container["readinessProbe"] = _probe(path, 5, 2, 3)
        container["livenessProbe"] = _probe(path, 10, 5, 3)
        # A crashed server restarts in place and keeps its node; the operator sees CrashLoopBackOff.
        spec["restartPolicy"] = "Always"
    container |= {
        "env": worker_env(plan),
        "resources": resources(plan),
        "securityContext": container_security_context(plan),
        "volumeMounts": mounts,
    }
    spec |= {
        "serviceAccountName": service_account_name(plan.job_name),
        "automountServiceAccountToken": True,
        # Service links would inject env vars for every Service in the namespace.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": plan.termination_grace_period_seconds,
        "affinity": node_affinity(plan.node_names[rank]),
        "securityContext": pod_security_context(plan),
        "containers": [container],
        "volumes": volumes,
    }
    if plan.node_selector:
        spec["nodeSelector"] = dict(plan.node_selector)
    tols = tolerations(plan)
    if tols:
        spec["tolerations"] = tols
    if plan.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in plan.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(plan, name, pod_labels(plan, rank)),
        "spec": spec,
    }


def render_pods(plan: WorkerPlan) -> list[Manifest]:
    return [render_pod(plan, rank) for rank in range(plan.replicas)]


def needs_rendezvous_service(plan: WorkerPlan) -> bool:
    """Only ranks on several pods need DNS names for each other; one pod rendezvouses on 127.0.0.1."""
    return plan.mode == "train" and plan.replicas > 1


def render_worker_objects(plan: WorkerPlan) -> list[Manifest]:
    """Everything one attempt needs, in creation order: identity, access, Service, pods."""
    services = []
    if plan.mode == "inference":
        services.append(render_inference_service(plan))
    elif needs_rendezvous_service(plan):
        services.append(render_rendezvous_service(plan))
    return [
        render_service_account(plan),
        render_role(plan),
        render_role_binding(plan),
        *services,
        *render_pods(plan),
    ]
