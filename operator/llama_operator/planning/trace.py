"""Job traces for the simulator: the file format.

A trace is YAML: `start` (RFC 3339), `pools` (name, nodes, AcceleratorPool spec) and `jobs` (name,
`arrival` in hours after start, `priority`, `hours` of serving for inference jobs, and a LlamaJob spec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from llama_operator.api.job import LlamaJobSpec
from llama_operator.api.pool import AcceleratorPoolSpec


@dataclass(frozen=True, slots=True)
class TracePool:
    name: str
    nodes: int
    spec: AcceleratorPoolSpec


@dataclass(frozen=True, slots=True)
class TraceJob:
    name: str
    arrival: float
    """Hours after the trace start."""
    spec: LlamaJobSpec
    hours: float = 0.0
    """Inference only: how long the service runs once placed."""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    start: datetime
    pools: tuple[TracePool, ...]
    jobs: tuple[TraceJob, ...]

    def at(self, hours: float) -> datetime:
        return self.start + timedelta(hours=hours)

    def with_pools(self, pools: tuple[TracePool, ...]) -> Trace:
        return Trace(self.name, self.start, pools, self.jobs)

    def scaled(self, factor: int) -> Trace:
        """The same trace with `factor` times the nodes in every pool."""
        return self.with_pools(tuple(TracePool(p.name, p.nodes * factor, p.spec) for p in self.pools))


def _dump_spec(spec: LlamaJobSpec | AcceleratorPoolSpec) -> dict[str, Any]:
    return spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")


def dump(trace: Trace) -> str:
    doc = {
        "name": trace.name,
        "start": trace.start.isoformat().replace("+00:00", "Z"),
        "pools": [{"name": p.name, "nodes": p.nodes, "spec": _dump_spec(p.spec)} for p in trace.pools],
        "jobs": [
            {
                "name": j.name,
                "arrival": round(j.arrival, 4),
                **({"hours": round(j.hours, 3)} if j.hours else {}),
                **({"priority": j.priority} if j.priority else {}),
                "spec": _dump_spec(j.spec),
            }
            for j in trace.jobs
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def parse(doc: Mapping[str, Any]) -> Trace:
    start = datetime.fromisoformat(str(doc["start"]).replace("Z", "+00:00"))
    pools = tuple(
        TracePool(p["name"], int(p["nodes"]), AcceleratorPoolSpec.model_validate(p["spec"]))
        for p in doc["pools"]
    )
    jobs = tuple(
        TraceJob(
            name=j["name"],
            arrival=float(j["arrival"]),
            spec=LlamaJobSpec.model_validate(j["spec"]),
            hours=float(j.get("hours", 0.0)),
            priority=int(j.get("priority", 0)),
        )
        for j in doc["jobs"]
    )
    return Trace(str(doc.get("name", "trace")), start, pools, jobs)


def load(path: Path | str) -> Trace:
    return parse(yaml.safe_load(Path(path).read_text()))
