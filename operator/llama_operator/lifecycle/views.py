"""Read-only views of the Kubernetes objects the lifecycle reasons about, parsed from raw bodies.

Parsing once, at watch time, keeps the reconcile loop cheap: it never walks raw dicts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from llama_operator.api import LlamaJobSpec, LlamaJobStatus
from llama_operator.api.types import LLAMAJOB_KIND, POOL_LABEL
from llama_operator.lifecycle.requests import pod_requests, resource_list
from llama_runtime.contract import PROGRESS_ANNOTATION

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "llama-operator"
JOB_LABEL = "llamaop.io/job"
ATTEMPT_LABEL = "llamaop.io/attempt"
RANK_LABEL = "llamaop.io/rank"
# Taints that announce a node is going away (AWS Node Termination Handler, Karpenter, our own tests).
INTERRUPTION_TAINTS = frozenset(
    {"aws-node-termination-handler/spot-itn", "karpenter.sh/disrupted", "llamaop.io/spot-interruption"}
)
UNSCHEDULABLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
# NodeResourcesFit's reasons (kube-scheduler's fit.go): "Insufficient <resource name>" or "Too many pods".
_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9][-A-Za-z0-9_./]*[A-Za-z0-9])")

Body = Mapping[str, Any]


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class NodeView:
    name: str
    pool: str | None
    ready: bool
    schedulable: bool
    interrupted: bool
    """A spot interruption or disruption notice is on the node."""
    allocatable: Mapping[str, int]
    """status.allocatable in planning.resources' integer units (cpu in millicores)."""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.ready and self.schedulable and not self.interrupted


def node_view(body: Body) -> NodeView:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {})
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = {t.get("key") for t in spec.get("taints") or []}
    labels = dict(meta.get("labels") or {})
    return NodeView(
        name=meta["name"],
        pool=labels.get(POOL_LABEL),
        ready=ready,
        schedulable=not spec.get("unschedulable", False) and not (taints & UNSCHEDULABLE_TAINTS),
        interrupted=bool(taints & INTERRUPTION_TAINTS),
        allocatable=resource_list(status.get("allocatable")),
        labels=labels,
    )


@dataclass(frozen=True)
class PodView:
    name: str
    namespace: str
    phase: str
    node_name: str | None
    job: str | None
    """Name of the owning LlamaJob (from its label); None for pods the operator did not make."""
    attempt: int
    rank: int
    ready: bool = False
    deleting: bool = False
    unschedulable: bool = False
    unschedulable_message: str = ""
    """The scheduler's word on why (the PodScheduled condition's message), while unschedulable."""
    unschedulable_since: datetime | None = None
    disruption: str | None = None
    """Why the pod is being taken away (eviction, preemption), if it is."""
    exit_code: int | None = None
    exit_reason: str | None = None
    progress: Mapping[str, Any] | None = None
    requests: Mapping[str, int] = field(default_factory=dict)
    """Effective requests, as kube-scheduler counts them (lifecycle.requests.pod_requests)."""
    uid: str = ""
    nominated_node: str | None = None
    """status.nominatedNodeName: where preemption made room for the pod (the scheduler counts it there)."""
    pinned_node: str | None = None
    """The one node a required node affinity on metadata.name allows (workers and DaemonSet pods)."""

    @property
    def key(self) -> str | None:
        return f"{self.namespace}/{self.job}" if self.job else None

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def short_of(self) -> tuple[str, ...]:
        """The resources the scheduler found short for this pod ("Insufficient nvidia.com/gpu", "Too many
        pods"), from its PodScheduled message; () when it is schedulable or held back by anything else."""
        message = self.unschedulable_message
        if not self.unschedulable or not message:
            return ()
        short = dict.fromkeys(_INSUFFICIENT.findall(message))
        if "Too many pods" in message:
            short["pods"] = None
        return tuple(short)

    @property
    def holds(self) -> str | None:
        """The node whose resources this pod holds or is about to: bound, nominated, or pinned there.
        None once it has finished (kube-scheduler no longer counts Succeeded or Failed pods)."""
        if self.terminal:
            return None
        return self.node_name or self.nominated_node or self.pinned_node


def _pinned_node(spec: Body) -> str | None:
    """The node name a pod's required node affinity pins it to, when every term names the same one."""
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    names: set[str] = set()
    for term in affinity.get("nodeSelectorTerms") or ():
        fields = [f for f in term.get("matchFields") or () if f.get("key") == "metadata.name"]
        if len(fields) != 1 or fields[0].get("operator") != "In" or len(fields[0].get("values") or ()) != 1:
            return None
        names.add(fields[0]["values"][0])
    return names.pop() if len(names) == 1 else None


def _disruption(status: Body, conditions: list[Body]) -> str | None:
    if status.get("reason") in ("Evicted", "Preempting", "Terminated", "NodeShutdown"):
        return str(status["reason"])
    for cond in conditions:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return str(cond.get("reason") or "DisruptionTarget")
    return None


def _progress(annotations: Mapping[str, str]) -> Mapping[str, Any] | None:
    raw = annotations.get(PROGRESS_ANNOTATION)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None  # a half-written or foreign annotation is ignored, not fatal
    return value if isinstance(value, dict) else None


def pod_view(body: Body) -> PodView:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {})
    labels = meta.get("labels") or {}
    conditions = status.get("conditions") or []
    # The job label may be shortened to fit 63 characters; the owner reference has the full name.
    owner = next(
        (o["name"] for o in meta.get("ownerReferences") or [] if o.get("kind") == LLAMAJOB_KIND), None
    )
    managed = labels.get(MANAGED_BY) == MANAGER and owner is not None
    exit_code = exit_reason = None
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term and (exit_code is None or term.get("exitCode", 0) != 0):
            exit_code, exit_reason = term.get("exitCode"), term.get("reason")
    scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), {})
    unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
    return PodView(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        phase=status.get("phase", "Pending"),
        node_name=spec.get("nodeName"),
        job=owner if managed else None,
        attempt=int(labels.get(ATTEMPT_LABEL, 0) or 0) if managed else 0,
        rank=int(labels.get(RANK_LABEL, 0) or 0) if managed else 0,
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
        deleting=bool(meta.get("deletionTimestamp")),
        unschedulable=unschedulable,
        unschedulable_message=str(scheduled.get("message") or "") if unschedulable else "",
        unschedulable_since=parse_time(scheduled.get("lastTransitionTime")) if unschedulable else None,
        disruption=_disruption(status, conditions),
        exit_code=exit_code,
        exit_reason=exit_reason,
        progress=_progress(meta.get("annotations") or {}) if managed else None,
        requests=pod_requests(spec),
        uid=meta.get("uid", ""),
        nominated_node=status.get("nominatedNodeName") or None,
        pinned_node=_pinned_node(spec),
    )


@dataclass(frozen=True)
class JobView:
    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: LlamaJobSpec | None
    spec_error: str | None
    status: LlamaJobStatus
    raw_spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
    return f"spec.{where}: {err.get('msg', 'invalid')}"


def job_view(body: Body) -> JobView:
    meta = body.get("metadata", {})
    raw_spec = body.get("spec") or {}
    spec: LlamaJobSpec | None
    try:
        spec, error = LlamaJobSpec.model_validate(raw_spec), None
    except ValidationError as exc:  # what slipped past the schema ends the job as Failed, with the reason
        spec, error = None, _first_error(exc)
    try:
        status = LlamaJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = LlamaJobStatus()  # someone wrote a status we cannot read: start over from Queued
    return JobView(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 1),
        created=parse_time(meta.get("creationTimestamp")) or datetime.now(UTC),
        spec=spec,
        spec_error=error,
        status=status,
        raw_spec=raw_spec,
    )
