"""Replays a job trace over pools with limited capacity, for the engine and the baselines.

Event driven: at every arrival and completion the queue is planned again (priority, then age), placed
jobs hold their devices for the time the cost model estimates (serving jobs for their trace `hours`),
and rejected ones leave. The cost model is the ground truth here, so the simulator compares placement
policies, not the accuracy of the model.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from llama_operator.api.job import LlamaJobSpec
from llama_operator.catalog import Catalog
from llama_operator.catalog import builtin as builtin_catalog
from llama_operator.planning.decision import Decision
from llama_operator.planning.engine import RANKINGS, Planner, Ranking, plan
from llama_operator.planning.inventory import Inventory, JobRequest, NodeState, PoolState
from llama_operator.planning.pools import resolve_pool
from llama_operator.planning.trace import Trace, TraceJob, TracePool
from llama_operator.planning.workload import deadline_of


@dataclass(frozen=True, slots=True)
class JobResult:
    name: str
    outcome: Literal["done", "rejected", "unfinished"]
    pool: str | None = None
    start: float | None = None
    """Hours after the trace start."""
    finish: float | None = None
    cost: float = 0.0
    node_names: tuple[str, ...] = ()
    devices_per_node: int = 0
    had_deadline: bool = False
    missed_deadline: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SimResult:
    ranking: str
    total_cost: float
    completed: int
    rejected: int
    unfinished: int
    deadline_jobs: int
    deadline_misses: int
    mean_queue_hours: float
    utilisation: float
    """Device-hours used / device-hours offered until the last job finished."""
    makespan_hours: float
    jobs: tuple[JobResult, ...] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "ranking": self.ranking,
            "totalCost": round(self.total_cost, 2),
            "completed": self.completed,
            "rejected": self.rejected,
            "unfinished": self.unfinished,
            "deadlineJobs": self.deadline_jobs,
            "deadlineMisses": self.deadline_misses,
            "meanQueueHours": round(self.mean_queue_hours, 3),
            "utilisation": round(self.utilisation, 4),
            "makespanHours": round(self.makespan_hours, 2),
        }


@dataclass(slots=True)
class _Running:
    name: str
    pool: str
    devices_per_node: int
    node_names: tuple[str, ...]


def _nodes(pool: TracePool) -> list[str]:
    return [f"{pool.name}-{i}" for i in range(pool.nodes)]


def simulate(trace: Trace, *, ranking: Ranking = "policy", catalog: Catalog | None = None) -> SimResult:
    catalog = catalog or builtin_catalog()
    capacity = {p.name: resolve_pool(p.spec, catalog).devices_per_node for p in trace.pools}
    free = {p.name: dict.fromkeys(_nodes(p), capacity[p.name]) for p in trace.pools}
    jobs = {j.name: j for j in trace.jobs}
    events: list[tuple[float, int, str, str]] = [(j.arrival, 1, "arrive", j.name) for j in trace.jobs]
    heapq.heapify(events)
    queue: dict[str, JobRequest] = {}
    running: dict[str, _Running] = {}
    results: dict[str, JobResult] = {}
    used_device_hours = 0.0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, kind, name = heapq.heappop(events)
            if kind == "arrive":
                job = jobs[name]
                queue[name] = JobRequest(name, job.spec, trace.at(job.arrival), priority=job.priority)
            else:
                done = running.pop(name)
                for node in done.node_names:
                    free[done.pool][node] += done.devices_per_node
        if not queue:
            continue
        inventory = _inventory(trace, free, capacity)
        for decision in plan(
            list(queue.values()), inventory, now=trace.at(now), catalog=catalog, ranking=ranking
        ):
            if decision.outcome == "queued":
                continue
            job = jobs[decision.key]
            del queue[decision.key]
            if decision.outcome == "rejected":
                results[job.name] = _rejected(trace, job, decision)
                continue
            hours = decision.est_hours if decision.est_hours is not None else job.hours
            pool = decision.pool or ""
            for node in decision.node_names:
                free[pool][node] -= decision.devices_per_node
            running[job.name] = _Running(job.name, pool, decision.devices_per_node, decision.node_names)
            heapq.heappush(events, (now + hours, 0, "finish", job.name))
            used_device_hours += decision.devices * hours
            results[job.name] = _done(trace, job, decision, now, hours)
    for name in queue:
        job = jobs[name]
        results[name] = JobResult(
            name, "unfinished", had_deadline=_deadline(trace, job) is not None, missed_deadline=True
        )
    return _summarise(trace, ranking, [results[j.name] for j in trace.jobs], used_device_hours, capacity)


def _inventory(trace: Trace, free: Mapping[str, Mapping[str, int]], capacity: Mapping[str, int]) -> Inventory:
    pools = []
    for p in trace.pools:
        nodes = tuple(
            NodeState(node, p.name, allocatable_devices=capacity[p.name], used_devices=capacity[p.name] - f)
            for node, f in free[p.name].items()
        )
        pools.append(PoolState(p.name, p.spec, nodes))
    return Inventory(tuple(pools))


def _deadline(trace: Trace, job: TraceJob) -> datetime | None:
    return deadline_of(job.spec, trace.at(job.arrival))


def _rejected(trace: Trace, job: TraceJob, decision: Decision) -> JobResult:
    has = _deadline(trace, job) is not None
    return JobResult(job.name, "rejected", had_deadline=has, missed_deadline=has, reason=decision.reason)


def _done(trace: Trace, job: TraceJob, decision: Decision, start: float, hours: float) -> JobResult:
    deadline = _deadline(trace, job)
    finish = start + hours
    missed = deadline is not None and trace.at(finish) > deadline + timedelta(seconds=1)
    return JobResult(
        job.name,
        "done",
        pool=decision.pool,
        start=start,
        finish=finish,
        cost=(decision.price_per_hour or 0.0) * hours,
        node_names=decision.node_names,
        devices_per_node=decision.devices_per_node,
        had_deadline=deadline is not None,
        missed_deadline=missed,
        reason=decision.reason,
    )


def _summarise(
    trace: Trace, ranking: str, results: list[JobResult], used: float, capacity: Mapping[str, int]
) -> SimResult:
    done = [r for r in results if r.outcome == "done"]
    arrivals = {j.name: j.arrival for j in trace.jobs}
    makespan = max((r.finish or 0.0 for r in done), default=0.0)
    offered = sum(p.nodes * capacity[p.name] for p in trace.pools) * makespan
    queued = [(r.start or 0.0) - arrivals[r.name] for r in done]
    return SimResult(
        ranking=ranking,
        total_cost=sum(r.cost for r in done),
        completed=len(done),
        rejected=sum(1 for r in results if r.outcome == "rejected"),
        unfinished=sum(1 for r in results if r.outcome == "unfinished"),
        deadline_jobs=sum(1 for r in results if r.had_deadline),
        deadline_misses=sum(1 for r in results if r.missed_deadline),
        mean_queue_hours=sum(queued) / len(queued) if queued else 0.0,
        utilisation=used / offered if offered else 0.0,
        makespan_hours=makespan,
        jobs=tuple(results),
    )


# ------------------------------------------------------------------ bounds and comparison


def _alone(
    spec: LlamaJobSpec, pools: tuple[TracePool, ...], *, now: datetime, catalog: Catalog | None
) -> Decision:
    """The decision for the job alone on idle pools."""
    states = tuple(PoolState(p.name, p.spec, tuple(NodeState(n, p.name) for n in _nodes(p))) for p in pools)
    planner = Planner(Inventory(states), now=now, catalog=catalog)
    return planner.decide(JobRequest("alone", spec, now))


def soonest_hours(
    spec: LlamaJobSpec, pools: tuple[TracePool, ...], *, now: datetime, catalog: Catalog | None = None
) -> float | None:
    """Hours to the earliest estimated finish of a training job alone on idle pools (no deadline)."""
    placement = spec.placement.model_copy(update={"policy": "fastest", "deadline": None})
    decision = _alone(spec.model_copy(update={"placement": placement}), pools, now=now, catalog=catalog)
    return decision.est_hours if decision.outcome == "placed" else None


def lower_bound(trace: Trace, *, catalog: Catalog | None = None) -> dict[str, float]:
    """Job name -> cost at its cheapest feasible pool at arrival, ignoring the other jobs (jobs that fit
    nowhere are left out)."""
    costs = {}
    for job in trace.jobs:
        placement = job.spec.placement.model_copy(update={"policy": "cheapest"})
        spec = job.spec.model_copy(update={"placement": placement})
        decision = _alone(spec, trace.pools, now=trace.at(job.arrival), catalog=catalog)
        if decision.outcome == "placed":
            hourly = (decision.price_per_hour or 0.0) * job.hours
            costs[job.name] = decision.est_cost if decision.est_cost is not None else hourly
    return costs


@dataclass(frozen=True, slots=True)
class Comparison:
    trace: str
    results: dict[str, SimResult]
    bound: dict[str, float]
    """Lower-bound cost per job."""

    @property
    def lower_bound(self) -> float:
        return sum(self.bound.values())

    @property
    def lower_bound_jobs(self) -> int:
        return len(self.bound)

    def common(self) -> set[str]:
        """Jobs that every ranking completed and the lower bound prices: what the ratios compare."""
        done = [{j.name for j in r.jobs if j.outcome == "done"} for r in self.results.values()]
        return set(self.bound).intersection(*done)

    def ratios(self) -> dict[str, float]:
        """Engine cost over each baseline's and over the lower bound, on `common()` jobs."""
        jobs = self.common()

        def cost(result: SimResult) -> float:
            return sum(j.cost for j in result.jobs if j.name in jobs)

        engine = cost(self.results["policy"])
        out = {f"vs {name}": engine / cost(r) for name, r in self.results.items() if name != "policy"}
        out["vs lower bound"] = engine / sum(self.bound[name] for name in jobs) if jobs else float("nan")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "results": [r.summary() for r in self.results.values()],
            "lowerBound": {"totalCost": round(self.lower_bound, 2), "jobs": self.lower_bound_jobs},
            "comparedJobs": len(self.common()),
            "ratios": {k: round(v, 4) for k, v in self.ratios().items()},
        }


def compare(trace: Trace, *, catalog: Catalog | None = None) -> Comparison:
    results = {ranking: simulate(trace, ranking=ranking, catalog=catalog) for ranking in RANKINGS}
    return Comparison(trace.name, results, lower_bound(trace, catalog=catalog))
