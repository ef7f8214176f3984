"""How the engine explains a decision: the per-pool evaluation, the candidate table and the messages."""

from __future__ import annotations

from dataclasses import dataclass

from llama_operator.planning.decision import Candidate, Decision
from llama_operator.planning.engines import serving_engine
from llama_operator.planning.estimate import Option
from llama_operator.planning.inventory import PoolState
from llama_operator.planning.pools import PoolType
from llama_operator.planning.resources import pod_requests
from llama_operator.planning.slots import Slots, need_of
from llama_operator.planning.workload import Workload


@dataclass(slots=True)
class PlannedPool:
    """A pool as the planner holds it: its resolved type and the free devices it has left."""

    state: PoolState
    name: str
    type: PoolType | None
    unit: PoolType | None
    """`type` at unit price and without node limit; pools of one instance type share one instance."""
    error: str
    slots: Slots
    node_limit: int


@dataclass(slots=True)
class PoolEval:
    """One pool for one job."""

    pool: PlannedPool
    verdict: str = ""
    """Set when the pool is ruled out before any estimate (family, capacity type, invalid pool...)."""
    note: str = ""
    blocked: str = ""
    """Why nothing can start on the pool now although it may fit (CoolingDown, Excluded)."""
    best: Option | None = None
    """Best feasible option (the baselines see the job without price caps, maxCost and deadline)."""
    best_key: tuple[float, ...] = ()
    best_now: Option | None = None
    """Best feasible option that fits the free devices now."""
    best_now_key: tuple[float, ...] = ()
    failed: Option | None = None
    """The option that got furthest when none is feasible."""


def shape(option: Option, pool: PlannedPool) -> str:
    accelerator = pool.type.accelerator if pool.type else "?"
    return f"{option.pods} x {option.devices_per_node} {accelerator}"


def money(option: Option) -> str:
    if option.cost is not None:
        return f", est. {option.hours:.2f} h, ${option.cost:,.2f}"
    return f", ${option.price_per_hour:,.2f}/h, {option.tokens_per_second:,.0f} tokens/s"


def candidates(work: Workload, evals: list[PoolEval], chosen: PoolEval | None) -> tuple[Candidate, ...]:
    """Every pool, best first: the chosen one, others with room, those waiting for room, those ruled out
    by a constraint (closest first), and those the job does not accept."""
    rows: list[tuple[tuple[object, ...], Candidate]] = []
    for ev in evals:
        pool, ptype = ev.pool, ev.pool.type
        shown = ev.best_now or ev.best or ev.failed
        free = pool.slots.total
        # Sort keys of one length: chosen, then the rest with room, waiting, ruled out, not accepted.
        if ev is chosen:
            rank: tuple[object, ...] = (0, 0, 0, 0)
            verdict, note = "Chosen", "best by " + work.policy
        elif ev.best_now is not None:
            rank = (1, *ev.best_now_key)
            verdict, note = lost(work, ev.best_now, chosen.best_now if chosen else None)
        elif ev.best is not None:
            rank = (2, *ev.best_key)
            verdict = ev.blocked or "NoCapacity"
            note = blocked_note(ev, work)
        elif ev.failed is not None:
            rank = (3, *ev.failed.closeness(), 0)
            verdict, note = ev.failed.reason, ev.failed.note(pool.name)
        else:
            rank = (4, 0, 0, 0)
            verdict, note = ev.verdict, ev.note
        if work.mode == "inference" and ptype is not None:
            engine = f"served by {serving_engine(ptype.family, ptype.accelerator)}"
            note = f"{note}; {engine}" if note else engine
        row = Candidate(
            pool=pool.name,
            accelerator=ptype.accelerator if ptype else "",
            family=ptype.family if ptype else "",
            capacity_type=ptype.capacity_type if ptype else "",
            devices_per_node=shown.devices_per_node if shown else 0,
            nodes=shown.pods if shown else 0,
            fits=bool(shown and shown.fits),
            tokens_per_second=shown.tokens_per_second or None if shown else None,
            tokens_per_second_per_sequence=shown.tokens_per_second_per_sequence or None if shown else None,
            hours=shown.hours if shown else None,
            price_per_hour=shown.price_per_hour or None if shown else None,
            cost=shown.cost if shown else None,
            cost_per_million_tokens=shown.cost_per_million_tokens if shown else None,
            free_devices=free,
            available_now=ev.best_now is not None,
            verdict=verdict,
            note=note,
        )
        rows.append(((*rank, pool.name), row))
    rows.sort(key=lambda r: r[0])
    return tuple(c for _, c in rows)


def lost(work: Workload, option: Option, winner: Option | None) -> tuple[str, str]:
    if winner is None:
        return "Available", ""
    if work.mode == "train":
        extra_cost = (option.cost or 0) - (winner.cost or 0)
        extra_hours = (option.hours or 0) - (winner.hours or 0)
        if work.policy == "cheapest" and extra_cost > 0.005:
            return "Costlier", f"+${extra_cost:,.2f}"
        if extra_hours > 0:
            return "Slower", f"+{extra_hours:.2f} h"
        return "Costlier", f"+${max(extra_cost, 0):,.2f}"
    extra_price = option.price_per_hour - winner.price_per_hour
    if work.policy == "cheapest" and extra_price > 0.00005:
        return "Costlier", f"+${extra_price:,.2f}/h"
    return "Slower", f"-{winner.tokens_per_second - option.tokens_per_second:,.0f} tokens/s"


def blocked_note(ev: PoolEval, work: Workload) -> str:
    option = ev.best
    assert option is not None
    if ev.blocked == "Excluded":
        return "the job failed over from this pool"
    if ev.blocked == "ProbeFailed":
        return f"ruled out by its probe: {ev.note}"
    if ev.blocked == "CoolingDown":
        until = ev.pool.state.cooldown_until
        return f"cooling down until {until.isoformat() if until else '?'}"
    per_pod, slots, ptype = option.devices_per_node, ev.pool.slots, ev.pool.type
    train = work.mode == "train"
    devices = slots.nodes_with_room(per_pod) if train else slots.pods_with_room(per_pod)
    more = ""
    if devices >= option.pods and slots.host is not None and ptype is not None:
        # The devices are there: something else the pods request is not (EFA, cpu, memory, pod slots).
        need = need_of(pod_requests(ptype, per_pod, train and option.pods > 1).vector(), ptype.resource_name)
        room = slots.nodes_with_room(per_pod, need) if train else slots.pods_with_room(per_pod, need)
        what = f"{devices} have the devices" if train else f"devices for {devices}"
        more = f" ({what}, not all of {_needs(need)} too)"
        devices = room
    if train:
        return f"needs {option.pods} node(s) with {per_pod} free devices, {devices} have them{more}"
    return f"needs {option.pods} replica(s) of {per_pod} devices, room for {devices}{more}"


def _needs(need: tuple[tuple[str, int], ...]) -> str:
    """What a pod asks for besides its devices, for people: "1 vpc.amazonaws.com/efa, 21.6 cpu, ..."."""
    shown = []
    for resource, amount in need:
        if resource == "pods":
            continue
        if resource == "cpu":
            shown.append(f"{amount / 1000:g} cpu")
        elif resource in ("memory", "ephemeral-storage"):
            shown.append(f"{amount / 2**30:.1f}Gi {resource}")
        else:
            shown.append(f"{amount} {resource}")
    return ", ".join(shown) or "the pod slots"


def rejection(key: str, work: Workload, evals: list[PoolEval], candidates: tuple[Candidate, ...]) -> Decision:
    tried = [e for e in evals if e.failed is not None]
    if not tried:
        reasons = sorted({e.verdict for e in evals})
        detail = ", ".join(reasons) if reasons else "the inventory has no pools"
        return Decision(
            key,
            "rejected",
            "NoAcceptedPool",
            f"no pool is accepted by the job's families, accelerators, capacity types and pools ({detail})",
            candidates=candidates,
        )
    best = min(tried, key=lambda e: (e.failed.closeness() if e.failed else (0, 0.0), e.pool.name))
    option = best.failed
    assert option is not None
    return Decision(
        key,
        "rejected",
        option.reason,
        f"{work.describe()} cannot run on any accepted pool even when empty; "
        f"closest is {best.pool.name}: {option.note(best.pool.name)}",
        candidates=candidates,
    )
