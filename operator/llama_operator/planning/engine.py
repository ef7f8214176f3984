"""The placement engine: jobs and an inventory snapshot in, one decision per job out.

Jobs are taken by priority, then age, then key. Each job gets every option on every pool it accepts
(`estimate`); the best option by the job's policy among those that fit the free devices now wins, and
those devices are taken from the engine's working copy so nothing is promised twice. A multi-node job
gets all its nodes or none. The simulator's baseline rankings reuse the same options; `explain` writes
the candidate table and the messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from llama_operator.catalog import Calibration, Catalog
from llama_operator.catalog import builtin as builtin_catalog
from llama_operator.planning import calibration, explain, probes
from llama_operator.planning.decision import Candidate, Decision, ProbePlan, finish_time
from llama_operator.planning.engines import serving_engine
from llama_operator.planning.estimate import (
    Option,
    Shared,
    Stage,
    bounded,
    capped,
    policy_key,
    rates_for,
    shared,
    unit_pool,
)
from llama_operator.planning.explain import PlannedPool, PoolEval
from llama_operator.planning.inventory import Inventory, JobRequest, PoolState
from llama_operator.planning.pools import PoolError, PoolType, resolve_pool
from llama_operator.planning.resources import PodRequests, pod_requests
from llama_operator.planning.slots import Need, Slots, need_of
from llama_operator.planning.workload import Workload, workload_of

log = logging.getLogger(__name__)

Ranking = Literal["policy", "first-fit", "cheapest-device-hour"]
"""policy: the job's placement policy (the engine). The others are the simulator's baselines: the first
pool in inventory order with room (Kueue's flavor order), or the lowest list price per device-hour.
Baselines honour what they can see as the engine does (price caps, maxCost and deadlines by the same
estimates) and differ only in which feasible pool they take."""

SpeedAdjust = Callable[[Workload, PoolType], float]
"""A factor on the calibrated speed of a workload on a pool type (the simulator's oracle knows the truth)."""

RANKINGS: tuple[Ranking, ...] = ("policy", "first-fit", "cheapest-device-hour")


class Planner:
    """A working copy of an inventory that decides jobs one at a time and books what it places."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        now: datetime,
        catalog: Catalog | None = None,
        ranking: Ranking = "policy",
        adjust: SpeedAdjust | None = None,
    ) -> None:
        self.now = now
        self.catalog = catalog or builtin_catalog()
        self.calibration = calibration_of(self.catalog)
        self.ranking = ranking
        self.adjust = adjust
        self._units: dict[PoolType, PoolType] = {}
        self._requests: dict[tuple[int, int, bool], tuple[PodRequests, Need]] = {}
        self.pools = [self._pool(state, inventory) for state in inventory.pools]

    def _pool(self, state: PoolState, inventory: Inventory) -> PlannedPool:
        try:
            ptype: PoolType | None = resolve_pool(state.spec, self.catalog)
            error = ""
        except PoolError as e:
            ptype, error = None, str(e)
        free: dict[str, int] = {}
        host: dict[str, dict[str, int]] = {}
        if ptype is not None:
            res = ptype.resource_name
            for node in state.nodes:
                if not (node.ready and node.schedulable):
                    continue
                allocatable = (
                    ptype.devices_per_node if node.allocatable_devices is None else node.allocatable_devices
                )
                free[node.name] = max(
                    0, allocatable - node.used_devices - inventory.promised.get(node.name, 0)
                )
                if node.allocatable is not None:
                    promised = inventory.promised_requests.get(node.name, {})
                    used = node.requested
                    host[node.name] = {
                        r: a - used.get(r, 0) - promised.get(r, 0)
                        for r, a in node.allocatable.items()
                        if r != res
                    }
        unit = self._units.setdefault(unit_pool(ptype), unit_pool(ptype)) if ptype else None
        slots = Slots(free, host)
        return PlannedPool(state, state.name, ptype, unit, error, slots, state.capacity_nodes())

    def pod(self, ptype: PoolType, devices: int, spans_nodes: bool) -> tuple[PodRequests, Need]:
        """A worker pod's requests on this pool type (planning.resources), and what Slots checks of them."""
        key = (id(ptype), devices, spans_nodes)
        found = self._requests.get(key)
        if found is None:
            requests = pod_requests(ptype, devices, spans_nodes)
            found = self._requests[key] = (requests, need_of(requests.vector(), ptype.resource_name))
        return found

    def decide(self, job: JobRequest) -> Decision:
        """Decide one job and book its devices if placed. Never raises."""
        try:
            return self._decide(job)
        except Exception as e:  # one bad job must not stop the queue behind it
            log.exception("planning %s failed", job.key)
            return Decision(job.key, "rejected", "InternalError", f"the planner failed on this job: {e}")

    def _decide(self, job: JobRequest) -> Decision:
        try:
            work = workload_of(job.spec, job.created)
        except ValueError as e:
            return Decision(job.key, "rejected", "InvalidSpec", str(e))
        unknown = sorted(work.accelerators - set(self.catalog.accelerators))
        if unknown:
            known = ", ".join(self.catalog.accelerators)
            return Decision(
                job.key,
                "rejected",
                "UnknownAccelerator",
                f"{', '.join(unknown)} not in the catalog ({known})",
            )
        hours_left = None
        if work.deadline is not None:
            hours_left = (work.deadline - self.now).total_seconds() / 3600.0
            if hours_left <= 0:
                return Decision(
                    job.key,
                    "rejected",
                    "DeadlineMiss",
                    f"the deadline {work.deadline.isoformat()} has passed",
                )
        uncapped = work.without_caps()
        # This job's physics per hardware (and measured speed): skips hashing the workload per pool.
        seen: dict[tuple[object, ...], Shared] = {}
        evals = [self._evaluate(work, uncapped, job, pool, hours_left, seen) for pool in self.pools]
        chosen = self._choose(work, evals)
        candidates = explain.candidates(work, evals, chosen)
        if job.measured:
            candidates = probes.mark_measured(candidates, job.measured)
        if chosen is not None and job.probe is not None and work.mode == "train":
            picked, why = probes.select(work, job.probe, evals)
            if picked:
                return self._probe(job, work, picked, candidates)
            placed = self._place(job, work, chosen, candidates)
            return replace(placed, message=f"{placed.message}; not probed: {why}" if why else placed.message)
        if chosen is not None:
            return self._place(job, work, chosen, candidates)
        # A pool the job's own probe ruled out is no pool to wait for.
        waiting = [
            (e.best_key, e.pool.name, e.best, e.pool)
            for e in evals
            if e.best is not None and e.blocked != probes.RULED_OUT
        ]
        if waiting:
            _, name, option, pool = min(waiting, key=lambda w: (w[0], w[1]))
            return Decision(
                job.key,
                "queued",
                "NoCapacity",
                f"{work.describe()} fits {len(waiting)} pool(s) but none has room now; best when free: "
                f"{name} ({explain.shape(option, pool)}{explain.money(option)})",
                candidates=candidates,
            )
        ruled_out = [e for e in evals if e.best is not None and e.blocked == probes.RULED_OUT]
        if ruled_out:
            why = "; ".join(f"{e.pool.name}: {e.note}" for e in ruled_out)
            return Decision(
                job.key,
                "rejected",
                "ProbesFailed",
                f"every pool {work.describe()} fits was ruled out by its probes ({why})",
                candidates=candidates,
            )
        return explain.rejection(job.key, work, evals, candidates)

    def _probe(
        self, job: JobRequest, work: Workload, picked: list[PoolEval], candidates: tuple[Candidate, ...]
    ) -> Decision:
        """Book each probed candidate's nodes as a placement of its own and return them to be measured."""
        assert job.probe is not None
        plans = []
        notes: dict[str, str] = {}
        for ev in picked:
            cost = probes.probe_cost(work, job.probe, ev)
            assert ev.best_now is not None
            notes[ev.pool.name] = f"probe {explain.shape(ev.best_now, ev.pool)}, est. ${cost:,.2f}"
            plans.append(ProbePlan(self._place(job, work, ev, candidates), cost))
        pools = ", ".join(p.placement.pool or "" for p in plans)
        total = sum(p.est_cost for p in plans)
        steps = f"{job.probe.warmup_steps} + {job.probe.steps} steps"
        return Decision(
            key=job.key,
            outcome="probe",
            reason=probes.PROBING,
            message=f"measuring {work.describe()} ({steps}) on {len(plans)} pool(s) before placing it: "
            f"{pools} (est. ${total:,.2f} in all)",
            candidates=probes.relabel(candidates, notes, ""),
            probes=tuple(plans),
        )

    def _evaluate(
        self,
        work: Workload,
        uncapped: Workload,
        job: JobRequest,
        pool: PlannedPool,
        hours_left: float | None,
        seen: dict[tuple[int, float], Shared],
    ) -> PoolEval:
        ev = PoolEval(pool)
        ptype, state = pool.type, pool.state
        if ptype is None or pool.unit is None:
            ev.verdict, ev.note = "InvalidPool", pool.error
            return ev
        if ptype.family not in work.families:
            ev.verdict, ev.note = "FamilyNotAccepted", f"{ptype.family} is not an accepted family"
            return ev
        if work.accelerators and ptype.accelerator not in work.accelerators:
            ev.verdict, ev.note = (
                "AcceleratorNotAccepted",
                f"{ptype.accelerator} is not an accepted accelerator",
            )
            return ev
        if ptype.capacity_type not in work.capacity_types:
            ev.verdict, ev.note = "CapacityTypeNotAccepted", f"{ptype.capacity_type} is not accepted"
            return ev
        if work.pools and state.name not in work.pools:
            ev.verdict, ev.note = "PoolNotAllowed", "not in placement.pools"
            return ev
        measured = job.measured.get(state.name) if job.measured else None
        if measured is not None and measured.ruled_out:
            ev.blocked, ev.note = probes.RULED_OUT, measured.ruled_out
        elif state.name in job.excluded_pools:
            ev.blocked = "Excluded"
        elif state.cooldown_until is not None and state.cooldown_until > self.now:
            ev.blocked = "CoolingDown"
        factor = state.learned.get((work.mode, work.precision), 1.0) if state.learned else 1.0
        unit: PoolType = pool.unit
        local: tuple[object, ...] = ()
        if measured is not None and measured.sample is not None:
            # This job's own measured speed and start-up on this pool replace what the pool learned.
            no_efa = self.catalog.defaults.multi_node_efficiency_no_efa
            factor = probes.factor(measured, ptype, self.calibration, no_efa) or factor
            unit = probes.with_startup(pool.unit, measured.startup_seconds)
            local = (state.name, measured.startup_seconds)
        if self.adjust is not None:
            factor *= self.adjust(work, ptype)
        local = (*local, id(pool.unit), factor)
        result = seen.get(local)
        if result is None:
            rates = rates_for(work, ptype, self.calibration, factor=factor)
            result = shared(uncapped, unit, self.catalog.defaults, rates=rates, hours_left=hours_left)
            seen[local] = result
        price, limit = ptype.price_per_node_hour, pool.node_limit
        max_price, max_cost = work.max_price_per_hour, work.max_cost
        feasible = result.feasible
        if price <= 0:  # a free pool: cost no longer orders the options
            feasible = tuple(sorted(feasible, key=lambda o: policy_key(work, o.priced(price))))
        training = one_pod_per_node(work, pool.type)
        track_host = pool.slots.host is not None
        for option in feasible:  # best first; the caps and the node limit only remove options
            if option.nodes_needed > limit:
                continue
            if max_price is not None and option.price_per_hour * price > max_price:
                continue
            if max_cost is not None and option.cost is not None and option.cost * price > max_cost:
                continue
            first = ev.best is None
            if first:
                ev.best = option.priced(price)
                ev.best_key = policy_key(work, ev.best)
            if ev.blocked:
                break
            need: Need = ()
            if track_host and option.devices_per_node <= pool.slots.most:  # else room() needs no more
                need = self.pod(ptype, option.devices_per_node, spans(work, option))[1]
            if pool.slots.room(option, training, need):
                ev.best_now = ev.best if first else option.priced(price)
                ev.best_now_key = ev.best_key if first else policy_key(work, ev.best_now)
                break
        if ev.best is None and result.everything:
            # Only options that pass the node limit need their price to see which cap they break.
            within = (bounded(work, o, limit) for o in result.everything)
            failed = min((capped(work, o.priced(price)) if o.ok else o for o in within), key=Option.closeness)
            ev.failed = failed if failed.stage in (Stage.PRICE, Stage.COST) else failed.priced(price)
        return ev

    def _choose(self, work: Workload, evals: list[PoolEval]) -> PoolEval | None:
        ready = [e for e in evals if e.best_now is not None]
        if not ready:
            return None
        if self.ranking == "first-fit":
            return ready[0]
        if self.ranking == "cheapest-device-hour":
            return min(ready, key=lambda e: (_device_hour(e.pool), e.pool.name))
        return min(ready, key=lambda e: (e.best_now_key, e.pool.name))

    def _place(
        self, job: JobRequest, work: Workload, ev: PoolEval, candidates: tuple[Candidate, ...]
    ) -> Decision:
        option, ptype = ev.best_now, ev.pool.type
        assert option is not None and ptype is not None
        requests, need = self.pod(ptype, option.devices_per_node, spans(work, option))
        node_names = ev.pool.slots.take(option, one_pod_per_node(work, ptype), need)
        feasible = sum(1 for c in candidates if c.available_now)
        why = {"policy": f"{work.policy} of {feasible} pool(s) with room"}.get(self.ranking, self.ranking)
        return Decision(
            key=job.key,
            outcome="placed",
            reason="Placed",
            message=f"{work.describe()} placed on {ev.pool.name} "
            f"({explain.shape(option, ev.pool)}{explain.money(option)}): {why}",
            pool=ev.pool.name,
            accelerator=ptype.accelerator,
            family=ptype.family,
            capacity_type=ptype.capacity_type,
            instance_type=ptype.instance_type,
            backend=ptype.backend,
            engine=serving_engine(ptype.family, ptype.accelerator) if work.mode == "inference" else None,
            resource_name=ptype.resource_name,
            node_names=node_names,
            nodes=option.pods,
            devices_per_node=option.devices_per_node,
            processes_per_node=option.processes_per_pod,
            activation_checkpointing=option.activation_checkpointing,
            requests=requests,
            price_per_hour=option.price_per_hour,
            est_hours=option.hours,
            est_cost=option.cost,
            est_tokens_per_second=option.tokens_per_second,
            est_tokens_per_second_per_sequence=option.tokens_per_second_per_sequence or None,
            cost_per_million_tokens=option.cost_per_million_tokens,
            est_finish=finish_time(self.now, option.hours),
            candidates=candidates,
        )


def one_pod_per_node(work: Workload, ptype: PoolType | None) -> bool:
    """Training ranks get a node each on accelerator pools; on cpu pools a device is a worker slot, so
    several ranks of one job may share a node (inference replicas always may)."""
    return work.mode == "train" and (ptype is None or ptype.family != "cpu")


def spans(work: Workload, option: Option) -> bool:
    """Whether the pods of this option talk to each other across nodes (and so get EFA)."""
    return work.mode == "train" and option.pods > 1


def order(jobs: Iterable[JobRequest]) -> list[JobRequest]:
    """Priority (high first), then age (old first), then key: the order the engine decides in."""
    return sorted(jobs, key=lambda j: (-j.effective_priority, j.created, j.key))


def plan(
    jobs: Sequence[JobRequest],
    inventory: Inventory,
    *,
    now: datetime,
    catalog: Catalog | None = None,
    ranking: Ranking = "policy",
    adjust: SpeedAdjust | None = None,
) -> list[Decision]:
    """One decision per job, in the order decided (see `order`). Pure and deterministic."""
    planner = Planner(inventory, now=now, catalog=catalog, ranking=ranking, adjust=adjust)
    return [planner.decide(job) for job in order(jobs)]


_FITTED: dict[int, tuple[Catalog, Calibration]] = {}


def calibration_of(catalog: Catalog) -> Calibration:
    """The catalog's calibration, or a fit to its measurements when it has none (a catalog override that
    changes measurements or accelerators drops the shipped fit)."""
    if catalog.calibration is not None:
        return catalog.calibration
    cached = _FITTED.get(id(catalog))
    if cached is None or cached[0] is not catalog:
        cached = (catalog, calibration.fit(catalog)[0])
        _FITTED[id(catalog)] = cached
    return cached[1]


def _device_hour(pool: PlannedPool) -> float:
    return pool.type.price_per_device_hour if pool.type else float("inf")
