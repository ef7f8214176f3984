"""Replays a job trace over pools with limited capacity, for the engine, the baselines and an oracle.

Event driven: at every arrival and completion the queue is planned again (priority, then age) and
placed jobs hold their devices until they finish. The engine plans with the calibrated speed model and,
with learning on, what finished jobs taught each pool (planning/learning.py). Jobs run at the speed of a
`Truth` it does not know (planning/truth.py): a training job takes its true time and pays its true cost, so
it may miss a deadline or a cost cap the estimate met; a service runs its trace `hours` and misses its
throughput target or per-sequence floor if the true speed is below them. The oracle is the engine
planning with the true speeds. Baselines see the same estimates and constraints as the engine and differ
only in which feasible pool they take (see engine.Ranking).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from llama_operator.api.job import LlamaJobSpec
from llama_operator.api.pool import LearnedSpeed
from llama_operator.catalog import Catalog
from llama_operator.catalog import builtin as builtin_catalog
from llama_operator.planning import learning
from llama_operator.planning.decision import Decision
from llama_operator.planning.engine import RANKINGS, Planner, Ranking, SpeedAdjust, calibration_of, plan
from llama_operator.planning.inventory import Inventory, JobRequest, NodeState, PoolState
from llama_operator.planning.pools import PoolType, resolve_pool
from llama_operator.planning.speed import Arch
from llama_operator.planning.trace import Trace, TraceJob, TracePool
from llama_operator.planning.truth import Truth
from llama_operator.planning.workload import Workload, deadline_of, workload_of

PRIOR = Truth("prior")
"""Every job runs exactly as estimated."""


@dataclass(frozen=True, slots=True)
class JobResult:
    name: str
    outcome: Literal["done", "rejected", "unfinished"]
    pool: str | None = None
    start: float | None = None
    """Hours after the trace start."""
    finish: float | None = None
    cost: float = 0.0
    """True cost: price x true hours."""
    estimated_cost: float = 0.0
    node_names: tuple[str, ...] = ()
    devices_per_node: int = 0
    had_deadline: bool = False
    missed_deadline: bool = False
    missed_cost_cap: bool = False
    """Training: the true cost went over placement.maxCost."""
    missed_service_level: bool = False
    """Inference: the true speed fell below the throughput target or the per-sequence floor."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SimResult:
    label: str
    total_cost: float
    completed: int
    rejected: int
    unfinished: int
    deadline_jobs: int
    deadline_misses: int
    cost_cap_misses: int
    service_level_misses: int
    mean_queue_hours: float
    utilisation: float
    """Device-hours used / device-hours offered until the last job finished."""
    makespan_hours: float
    jobs: tuple[JobResult, ...] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "totalCost": round(self.total_cost, 2),
            "completed": self.completed,
            "rejected": self.rejected,
            "unfinished": self.unfinished,
            "deadlineJobs": self.deadline_jobs,
            "deadlineMisses": self.deadline_misses,
            "costCapMisses": self.cost_cap_misses,
            "serviceLevelMisses": self.service_level_misses,
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
    sample: learning.Sample | None


def _nodes(pool: TracePool) -> list[str]:
    return [f"{pool.name}-{i}" for i in range(pool.nodes)]


def label(ranking: Ranking, *, learn: bool = False, oracle: bool = False) -> str:
    if oracle:
        return "oracle (knows the truth)"
    name = "engine" if ranking == "policy" else ranking
    return f"{name} + learning" if learn else name


def simulate(
    trace: Trace,
    *,
    ranking: Ranking = "policy",
    catalog: Catalog | None = None,
    truth: Truth = PRIOR,
    learn: bool = False,
    oracle: bool = False,
) -> SimResult:
    """Replay `trace`. `learn`: finished jobs teach their pool; `oracle`: plan with the true speeds."""
    catalog = catalog or builtin_catalog()
    calibration = calibration_of(catalog)
    types = {p.name: resolve_pool(p.spec, catalog) for p in trace.pools}
    capacity = {name: t.devices_per_node for name, t in types.items()}
    free = {p.name: dict.fromkeys(_nodes(p), capacity[p.name]) for p in trace.pools}
    specs = {p.name: p.spec for p in trace.pools}
    jobs = {j.name: j for j in trace.jobs}
    works: dict[str, Workload] = {}
    learned: dict[str, list[LearnedSpeed]] = {p.name: [] for p in trace.pools}
    events: list[tuple[float, int, str, str]] = [(j.arrival, 1, "arrive", j.name) for j in trace.jobs]
    heapq.heapify(events)
    queue: dict[str, JobRequest] = {}
    running: dict[str, _Running] = {}
    results: dict[str, JobResult] = {}
    used_device_hours = 0.0

    def true_factor(work: Workload, ptype: PoolType) -> float:
        return truth.factor(ptype.accelerator, work.shape.label, work.mode)

    adjust: SpeedAdjust | None = true_factor if oracle else None
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, kind, name = heapq.heappop(events)
            if kind == "arrive":
                job = jobs[name]
                queue[name] = JobRequest(name, job.spec, trace.at(job.arrival), priority=job.priority)
                works[name] = workload_of(job.spec, trace.at(job.arrival))
            else:
                done = running.pop(name)
                for node in done.node_names:
                    free[done.pool][node] += done.devices_per_node
                if learn and done.sample is not None:
                    new = learning.record(
                        learned[done.pool], done.sample, specs[done.pool], catalog, calibration
                    )
                    learned[done.pool] = new if new is not None else learned[done.pool]
        if not queue:
            continue
        inventory = _inventory(trace, free, capacity, learned if learn else None)
        for decision in plan(
            list(queue.values()),
            inventory,
            now=trace.at(now),
            catalog=catalog,
            ranking=ranking,
            adjust=adjust,
        ):
            if decision.outcome == "queued":
                continue
            job, work = jobs[decision.key], works[decision.key]
            del queue[decision.key]
            if decision.outcome == "rejected":
                results[job.name] = _rejected(trace, job, decision)
                continue
            pool = decision.pool or ""
            ptype = types[pool]
            # The estimate used the learned factor (the oracle: the truth); the job runs at the truth.
            used = learning.factors(learned[pool]).get((work.mode, work.precision), 1.0) if learn else 1.0
            if oracle:
                used *= true_factor(work, ptype)
            speedup = true_factor(work, ptype) / used
            true_tps = (decision.est_tokens_per_second or 0.0) * speedup
            if work.mode == "train":
                startup = ptype.device.startup_minutes / 60.0
                est = decision.est_hours or startup
                hours = startup + (est - startup) / speedup
            else:
                hours = job.hours
            for node in decision.node_names:
                free[pool][node] -= decision.devices_per_node
            sample = _sample(work, decision, true_tps)
            running[job.name] = _Running(
                job.name, pool, decision.devices_per_node, decision.node_names, sample
            )
            heapq.heappush(events, (now + hours, 0, "finish", job.name))
            used_device_hours += decision.devices * hours
            results[job.name] = _done(trace, job, work, decision, now, hours, speedup)
    for name in queue:
        job = jobs[name]
        results[name] = JobResult(
            name, "unfinished", had_deadline=_deadline(trace, job) is not None, missed_deadline=True
        )
    return _summarise(
        trace,
        label(ranking, learn=learn, oracle=oracle),
        [results[j.name] for j in trace.jobs],
        used_device_hours,
        capacity,
    )


def _sample(work: Workload, decision: Decision, tokens_per_second: float) -> learning.Sample:
    return learning.Sample(
        mode=work.mode,
        precision=work.precision,
        tokens_per_second=tokens_per_second,
        arch=Arch.of(work.shape),
        devices_per_node=decision.devices_per_node,
        nodes=decision.nodes,
        sequence_length=work.sequence_length,
        activation_checkpointing=decision.activation_checkpointing,
        max_batch=work.max_batch,
        context_length=work.context_length,
    )


def _inventory(
    trace: Trace,
    free: Mapping[str, Mapping[str, int]],
    capacity: Mapping[str, int],
    learned: Mapping[str, list[LearnedSpeed]] | None,
) -> Inventory:
    pools = []
    for p in trace.pools:
        nodes = tuple(
            NodeState(node, p.name, allocatable_devices=capacity[p.name], used_devices=capacity[p.name] - f)
            for node, f in free[p.name].items()
        )
        factors = learning.factors(learned[p.name]) if learned is not None else {}
        pools.append(PoolState(p.name, p.spec, nodes, learned=factors))
    return Inventory(tuple(pools))


def _deadline(trace: Trace, job: TraceJob) -> datetime | None:
    return deadline_of(job.spec, trace.at(job.arrival))


def _rejected(trace: Trace, job: TraceJob, decision: Decision) -> JobResult:
    has = _deadline(trace, job) is not None
    return JobResult(job.name, "rejected", had_deadline=has, missed_deadline=has, reason=decision.reason)


def _done(
    trace: Trace,
    job: TraceJob,
    work: Workload,
    decision: Decision,
    start: float,
    hours: float,
    speedup: float,
) -> JobResult:
    deadline = _deadline(trace, job)
    finish = start + hours
    missed = deadline is not None and trace.at(finish) > deadline + timedelta(seconds=1)
    cost = (decision.price_per_hour or 0.0) * hours
    cap = work.max_cost is not None and work.mode == "train" and cost > work.max_cost * (1 + 1e-9)
    slow = False
    if work.mode == "inference":
        true_tps = (decision.est_tokens_per_second or 0.0) * speedup
        per_sequence = (decision.est_tokens_per_second_per_sequence or 0.0) * speedup
        target = work.target_tokens_per_second
        slow = (
            target is not None and true_tps < target
        ) or per_sequence < work.min_tokens_per_second_per_sequence
    return JobResult(
        job.name,
        "done",
        pool=decision.pool,
        start=start,
        finish=finish,
        cost=cost,
        estimated_cost=decision.est_cost if decision.est_cost is not None else cost,
        node_names=decision.node_names,
        devices_per_node=decision.devices_per_node,
        had_deadline=deadline is not None,
        missed_deadline=missed,
        missed_cost_cap=cap,
        missed_service_level=slow,
        reason=decision.reason,
    )


def _summarise(
    trace: Trace, name: str, results: list[JobResult], used: float, capacity: Mapping[str, int]
) -> SimResult:
    done = [r for r in results if r.outcome == "done"]
    arrivals = {j.name: j.arrival for j in trace.jobs}
    makespan = max((r.finish or 0.0 for r in done), default=0.0)
    offered = sum(p.nodes * capacity[p.name] for p in trace.pools) * makespan
    queued = [(r.start or 0.0) - arrivals[r.name] for r in done]
    return SimResult(
        label=name,
        total_cost=sum(r.cost for r in done),
        completed=len(done),
        rejected=sum(1 for r in results if r.outcome == "rejected"),
        unfinished=sum(1 for r in results if r.outcome == "unfinished"),
        deadline_jobs=sum(1 for r in results if r.had_deadline),
        deadline_misses=sum(1 for r in results if r.missed_deadline),
        cost_cap_misses=sum(1 for r in results if r.missed_cost_cap),
        service_level_misses=sum(1 for r in results if r.missed_service_level),
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
    truth: str
    results: dict[str, SimResult]
    """By label; ORACLE is the reference."""

    def common(self) -> set[str]:
        """Jobs that every run completed: what the cost ratios compare."""
        done = [{j.name for j in r.jobs if j.outcome == "done"} for r in self.results.values()]
        return set.intersection(*done) if done else set()

    def cost_on(self, result: SimResult, jobs: set[str]) -> float:
        return sum(j.cost for j in result.jobs if j.name in jobs)

    def regret(self) -> dict[str, float]:
        """True cost over the oracle's on the jobs every run completed (1.0 = no regret)."""
        jobs = self.common()
        reference = self.cost_on(self.results[ORACLE], jobs)
        return {
            k: self.cost_on(r, jobs) / reference if reference else float("nan")
            for k, r in self.results.items()
        }

    def to_json(self) -> dict[str, Any]:
        regret = self.regret()
        return {
            "trace": self.trace,
            "truth": self.truth,
            "comparedJobs": len(self.common()),
            "results": [{**r.summary(), "regret": round(regret[k], 4)} for k, r in self.results.items()],
        }


ORACLE = label("policy", oracle=True)


def compare(trace: Trace, *, catalog: Catalog | None = None, truth: Truth = PRIOR) -> Comparison:
    """Every ranking with learning off and on, and the oracle, against one truth."""
    results: dict[str, SimResult] = {}
    for ranking in RANKINGS:
        for learn in (False, True):
            r = simulate(trace, ranking=ranking, catalog=catalog, truth=truth, learn=learn)
            results[r.label] = r
    oracle = simulate(trace, catalog=catalog, truth=truth, oracle=True)
    results[oracle.label] = oracle
    return Comparison(trace.name, truth.name, results)
