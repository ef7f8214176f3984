"""The cost model: every way to run one workload on one pool type, with fit, speed, price and verdict.

Pricing is pro rata of the node: a pod with d of a node's D devices costs d/D of the node's price, since
the engine packs several jobs' pods onto one node. Training uses the fewest nodes that hold the model and
meet the deadline; multi-node jobs take whole nodes unless the job fixes devicesPerNode.

Options are computed in two steps so the engine can share the expensive one between pools: `physics`
(memory, speed, time, deadline) on the pool's hardware at 1 USD per node-hour and without a node limit,
then per pool `bounded` (its node limit), `Option.priced` (its price) and `capped` (the job's caps).
`options` composes them for one pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import lru_cache

from llama_operator.catalog import Calibration, Defaults
from llama_operator.planning import speed
from llama_operator.planning.llama import (
    GIB,
    KV_TRAFFIC,
    TrainingMemory,
    inference_rank_bytes,
    training_memory,
)
from llama_operator.planning.pools import PoolType
from llama_operator.planning.speed import CHECKPOINTING_SPEEDUP
from llama_operator.planning.workload import Workload

# Inference working memory beyond weights and KV cache (activations, buffers).
INFERENCE_OVERHEAD = 1.05


class Stage(IntEnum):
    """How far an option got through the checks; the highest stage over all pools names the binding
    constraint when a job fits nowhere."""

    FILTERED = 0
    DEVICES = 1
    UNSUPPORTED = 2
    """The runtime cannot run it (its capability row says so)."""
    NODES = 3
    BATCH = 4
    MEMORY = 5
    LATENCY = 6
    THROUGHPUT = 7
    DEADLINE = 8
    PRICE = 9
    COST = 10
    OK = 11


REASONS: dict[Stage, str] = {
    Stage.UNSUPPORTED: "NotSupported",
    Stage.DEVICES: "DevicesNotAllowed",
    Stage.NODES: "NotEnoughNodes",
    Stage.BATCH: "BatchSplit",
    Stage.MEMORY: "DoesNotFit",
    Stage.LATENCY: "TooSlowPerSequence",
    Stage.THROUGHPUT: "TooSlow",
    Stage.PRICE: "ExceedsMaxPrice",
    Stage.COST: "ExceedsMaxCost",
    Stage.DEADLINE: "DeadlineMiss",
    Stage.OK: "Feasible",
}


@dataclass(frozen=True, slots=True)
class Option:
    """One way to run a workload on a pool: `pods` pods of `devices_per_node` devices each."""

    stage: Stage
    devices_per_node: int
    pods: int
    """Training: nodes, one pod each. Inference: replicas (several may share a node)."""
    processes_per_pod: int = 1
    activation_checkpointing: bool = False
    memory_need_gib: float = 0.0
    """Per device."""
    memory_usable_gib: float = 0.0
    tokens_per_second: float = 0.0
    hours: float | None = None
    price_per_hour: float = 0.0
    cost: float | None = None
    cost_per_million_tokens: float | None = None
    nodes_needed: int = 0
    """Nodes the pool must have at least: training nodes, or inference replicas over pods per node."""
    fit_nodes: int = 0
    """Training: nodes that hold the sharded state."""
    base_nodes: int = 0
    """Training: nodes for memory and deadline, before rounding up to split the batch evenly."""
    needed: int = 0
    """For NODES/MEMORY/DEADLINE: nodes the constraint needs; for DEVICES: the requested count."""
    limit: float = 0.0
    """The bound that was broken (node limit, price cap, cost cap, hours left, target tokens/s)."""
    unshardable: bool = False
    """MEMORY: what each rank holds whatever the node count (a gathered layer, activations) is too big."""
    tokens_per_second_per_sequence: float = 0.0
    """Inference: decode rate of one sequence (1 / step time)."""
    holders_per_pod: int = 1
    """Training: holders of a state shard and a micro batch each per pod (processes, or XLA devices)."""
    detail: str = ""
    """UNSUPPORTED, and unshardable MEMORY: the sentence that explains it."""

    @property
    def ok(self) -> bool:
        return self.stage is Stage.OK

    @property
    def reason(self) -> str:
        return REASONS[self.stage]

    @property
    def fits(self) -> bool:
        return self.stage > Stage.MEMORY

    @property
    def devices(self) -> int:
        return self.devices_per_node * self.pods

    def priced(self, price_per_node_hour: float) -> Option:
        """This option of a unit-priced pool at the pool's real price."""
        if price_per_node_hour == 1.0:
            return self
        scale = price_per_node_hour
        return self._copy(
            self.stage,
            self.price_per_hour * scale,
            None if self.cost is None else self.cost * scale,
            None if self.cost_per_million_tokens is None else self.cost_per_million_tokens * scale,
            self.needed,
            self.limit,
        )

    def _copy(
        self,
        stage: Stage,
        price_per_hour: float,
        cost: float | None,
        cost_per_million_tokens: float | None,
        needed: int,
        limit: float,
    ) -> Option:
        # Spelled out: dataclasses.replace is the engine's hottest call otherwise.
        return Option(
            stage,
            self.devices_per_node,
            self.pods,
            self.processes_per_pod,
            self.activation_checkpointing,
            self.memory_need_gib,
            self.memory_usable_gib,
            self.tokens_per_second,
            self.hours,
            price_per_hour,
            cost,
            cost_per_million_tokens,
            self.nodes_needed,
            self.fit_nodes,
            self.base_nodes,
            needed,
            limit,
            self.unshardable,
            self.tokens_per_second_per_sequence,
            self.holders_per_pod,
            self.detail,
        )

    def failing(self, stage: Stage, *, needed: int = 0, limit: float = 0.0) -> Option:
        """The same option, failing `stage`."""
        return self._copy(stage, self.price_per_hour, self.cost, self.cost_per_million_tokens, needed, limit)

    @property
    def shortfall(self) -> float:
        """How far the option is from passing its failed check (1.0 = just at the bound)."""
        stage, limit = self.stage, self.limit or 1e-9
        if self.unshardable:  # no node count fixes it: farther than any option more nodes would fix
            return 1e6 * self.memory_need_gib / max(self.memory_usable_gib, 1e-9)
        if stage is Stage.UNSUPPORTED:  # the one that would need least memory if the runtime could
            return self.memory_need_gib / max(self.memory_usable_gib, 1e-9) if self.memory_usable_gib else 1.0
        if stage is Stage.MEMORY and not self.needed:
            return self.memory_need_gib / max(self.memory_usable_gib, 1e-9)
        if stage in (Stage.NODES, Stage.MEMORY, Stage.DEADLINE) and self.needed:
            return self.needed / max(limit, 1e-9)
        if stage is Stage.THROUGHPUT:
            return limit / max(self.tokens_per_second, 1e-9)
        if stage is Stage.LATENCY:
            return limit / max(self.tokens_per_second_per_sequence, 1e-9)
        if stage is Stage.PRICE:
            return self.price_per_hour / limit
        if stage is Stage.COST:
            return (self.cost or 0.0) / limit
        if stage is Stage.DEADLINE:
            return (self.hours or 0.0) / limit if limit > 0 else float("inf")
        return 1.0

    def closeness(self) -> tuple[int, float]:
        """Sort key, smallest first: the option that got furthest and missed by least."""
        return (-self.stage, self.shortfall)

    def note(self, pool: str) -> str:
        """One sentence on why this option is as it is."""
        shape = f"{self.pods} x {self.devices_per_node}"
        match self.stage:
            case Stage.UNSUPPORTED:
                return self.detail
            case Stage.DEVICES:
                return f"{self.needed} devices per pod is not an allowed count on {pool}"
            case Stage.NODES:
                return f"needs {self.needed} nodes, {pool} can have {int(self.limit)}"
            case Stage.BATCH:
                return f"global batch does not split evenly over the {self.pods * self.holders_per_pod} ranks"
            case Stage.MEMORY if self.detail:  # unshardable, or beyond the runtime line's node limit
                return self.detail
            case Stage.MEMORY if self.needed > self.limit:
                return f"needs {self.needed} nodes to hold the model, {pool} can have {int(self.limit)}"
            case Stage.MEMORY:
                return (
                    f"needs {self.memory_need_gib:.1f} GiB per device on {shape}, "
                    f"{self.memory_usable_gib:.1f} GiB usable"
                )
            case Stage.THROUGHPUT:
                return (
                    f"{self.tokens_per_second:,.0f} tokens/s on {shape}, below the target {self.limit:,.0f}"
                )
            case Stage.LATENCY:
                return (
                    f"{self.tokens_per_second_per_sequence:,.1f} tokens/s per sequence on {shape}, below "
                    f"the floor {self.limit:,.1f} (inference.minTokensPerSecondPerSequence)"
                )
            case Stage.PRICE:
                return f"${self.price_per_hour:,.2f}/h on {shape}, above maxPricePerHour ${self.limit:,.2f}"
            case Stage.COST:
                return f"est. ${self.cost or 0:,.2f} on {shape}, above maxCost ${self.limit:,.2f}"
            case Stage.DEADLINE if self.needed > 0:
                return f"needs {self.needed} nodes to meet the deadline, {pool} can have {int(self.limit)}"
            case Stage.DEADLINE:
                left = max(self.limit, 0)
                return f"est. {self.hours or 0:.1f} h on {shape}, {left:.1f} h left to the deadline"
            case _:
                return f"{shape} devices, {self.tokens_per_second:,.0f} tokens/s"


def policy_key(work: Workload, option: Option) -> tuple[float, ...]:
    """Smaller is better. Cheapest: least cost, then soonest. Fastest: soonest, then least cost.
    Inference has no end: cheapest is least $/h, fastest most tokens/s. The order of a pool's options
    does not change with its price."""
    if work.mode == "train":
        cost, hours = option.cost or 0.0, option.hours or 0.0
        return (cost, hours, option.devices) if work.policy == "cheapest" else (hours, cost, option.devices)
    pph, tps = option.price_per_hour, -option.tokens_per_second
    return (pph, tps, option.devices) if work.policy == "cheapest" else (tps, pph, option.devices)


# Every serving engine of the capability contract serves bf16.
SERVING_PRECISION = "bf16"


@dataclass(frozen=True, slots=True)
class Rates:
    """The calibrated speeds of one workload on one kind of hardware (hashable: `shared` caches on it)."""

    tokens_per_device: float = 0.0
    """Training tokens/s of one device when the job fits one node."""
    node_retention: float = 1.0
    bandwidth_efficiency: float = 0.0
    """Inference (with compute_efficiency: the calibration's InferenceSpeed)."""
    compute_efficiency: float = 0.0
    replica_retention: float = 1.0
    factor: float = 1.0
    """Inference: what a pool learned, times any simulator truth."""


def rates_for(
    work: Workload, device_pool: PoolType, calibration: Calibration, *, factor: float = 1.0
) -> Rates:
    """The calibration's speeds for `work` on the pool's accelerator, times `factor` (what the pool has
    learned from finished jobs, planning/learning.py)."""
    device, accelerator = device_pool.device, device_pool.accelerator
    if work.mode == "train":
        fitted = speed.training_speed(calibration, accelerator, device, work.precision)
        per_device = speed.training_tokens_per_device(
            work.flops_per_token, device, work.precision, fitted, factor=factor
        )
        return Rates(tokens_per_device=per_device, node_retention=calibration.node_retention)
    fitted_inference = speed.inference_speed(calibration, accelerator, device, SERVING_PRECISION)
    return Rates(
        bandwidth_efficiency=fitted_inference.bandwidth_efficiency,
        compute_efficiency=fitted_inference.compute_efficiency,
        replica_retention=calibration.replica_retention,
        factor=factor,
    )


def unit_pool(pool: PoolType) -> PoolType:
    """The pool's hardware at 1 USD per node-hour, without a node limit: the input of `physics`."""
    return replace(
        pool,
        instance_type=None,
        price_per_node_hour=1.0,
        capacity_type="spot" if pool.capacity_type == "spot" else "on-demand",
        resource_name=None,
        max_nodes=None,
    )


def options(
    work: Workload,
    pool: PoolType,
    defaults: Defaults,
    *,
    node_limit: int,
    rates: Rates,
    hours_left: float | None,
) -> tuple[Option, ...]:
    """Every option of `work` on `pool` with at most `node_limit` nodes, feasible or not. `hours_left`
    is the time to the deadline."""
    found = physics(work.without_caps(), unit_pool(pool), defaults, rates=rates, hours_left=hours_left)
    price = pool.price_per_node_hour
    return tuple(capped(work, bounded(work, o, node_limit).priced(price)) for o in found)


@dataclass(frozen=True, slots=True)
class Shared:
    """`physics` of one workload on one kind of hardware, as the engine reuses it across pools."""

    feasible: tuple[Option, ...]
    """Options that pass every check but the node limit and the caps, best first (at any price > 0)."""
    everything: tuple[Option, ...]


@lru_cache(maxsize=16384)
def shared(
    work: Workload, unit: PoolType, defaults: Defaults, *, rates: Rates, hours_left: float | None
) -> Shared:
    """Cached `physics` for `work.without_caps()` on `unit_pool(...)`: pools of one instance type and
    replans of one job share it."""
    found = physics(work, unit, defaults, rates=rates, hours_left=hours_left)
    feasible = sorted((o for o in found if o.ok), key=lambda o: policy_key(work, o))
    return Shared(tuple(feasible), found)


def bounded(work: Workload, option: Option, node_limit: int) -> Option:
    """The option on a pool that can have at most `node_limit` nodes."""
    if option.stage in (Stage.UNSUPPORTED, Stage.DEVICES) or option.unshardable:
        return option
    if option.nodes_needed <= node_limit:
        return option
    # One node would hold it: a pool without nodes lacks nodes, not memory or time.
    if work.mode != "train" or work.nodes is not None or node_limit < 1:
        stage, needed = Stage.NODES, option.nodes_needed
    elif option.fit_nodes > node_limit:
        stage, needed = Stage.MEMORY, option.fit_nodes
    elif option.base_nodes > node_limit:
        stage, needed = Stage.DEADLINE, option.base_nodes
    else:
        stage, needed = Stage.BATCH, 0
    return option.failing(stage, needed=needed, limit=node_limit)


def capped(work: Workload, option: Option) -> Option:
    """The priced option with the job's price and cost caps applied."""
    if not option.ok:
        return option
    if work.max_price_per_hour is not None and option.price_per_hour > work.max_price_per_hour:
        return option.failing(Stage.PRICE, limit=work.max_price_per_hour)
    if work.max_cost is not None and option.cost is not None and option.cost > work.max_cost:
        return option.failing(Stage.COST, limit=work.max_cost)
    return option


def physics(
    work: Workload, unit: PoolType, defaults: Defaults, *, rates: Rates, hours_left: float | None
) -> tuple[Option, ...]:
    """Options on unit-priced hardware with no node limit, checking devices, batch split, memory,
    per-sequence decode floor, throughput target and deadline."""
    if work.mode == "train":
        return _training(work, unit, defaults, rates, hours_left)
    return _inference(work, unit, defaults, rates)


def _device_counts(work: Workload, pool: PoolType) -> tuple[int, ...] | None:
    if work.devices_per_node is None:
        return pool.allowed_device_counts
    if work.devices_per_node in pool.allowed_device_counts:
        return (work.devices_per_node,)
    return None


def _training(
    work: Workload, pool: PoolType, defaults: Defaults, rates: Rates, hours_left: float | None
) -> tuple[Option, ...]:
    counts = _device_counts(work, pool)
    if counts is None:
        return (Option(Stage.DEVICES, work.devices_per_node or 0, 0, needed=work.devices_per_node or 0),)
    refused = pool.refusal("train", work.precision)
    if refused is not None:
        return (Option(Stage.UNSUPPORTED, work.devices_per_node or 0, 0, detail=refused),)
    spot = pool.capacity_type == "spot"
    slowdown = 1.0 + (defaults.spot_time_overhead if spot else 0.0)
    startup = pool.device.startup_minutes / 60.0
    efa, no_efa = bool(pool.efa_per_node), defaults.multi_node_efficiency_no_efa

    def multi_node(nodes: int) -> float:
        return speed.node_scale(nodes, rates.node_retention, efa=efa, no_efa=no_efa)

    widest = max(counts)
    modes = (False, True) if work.activation_checkpointing is None else (work.activation_checkpointing,)
    memory = {ac: _training_memory(work, pool, ac) for ac in modes}
    found: list[Option] = []
    for dpn in counts:
        holders = pool.shard_holders(dpn)
        rank_budget = dpn * pool.device.memory_gib * GIB * defaults.usable_memory_fraction / holders
        plain: Option | None = None
        for ac in modes:
            if ac and plain is not None and plain.fits and (plain.pods == 1 or work.nodes is not None):
                break  # checkpointing would only be slower: it cannot save a node here
            option = _training_option(
                work, pool, dpn, holders, rank_budget, ac, memory[ac], rates.tokens_per_device, hours_left,
                slowdown=slowdown, startup=startup, multi_node=multi_node, widest=widest,
            )  # fmt: skip
            if option is not None:
                found.append(option)
            plain = option
    return tuple(found)


def _training_memory(work: Workload, pool: PoolType, ac: bool, *, fused: bool = False) -> TrainingMemory:
    """Per shard holder, as the pool's runtime line shards, computes and chunks (its capability row);
    `fused`: as it would with fused attention."""
    row = pool.capability.training
    assert row is not None
    if fused:
        row = replace(row, attention="fused")
    return training_memory(
        work.shape,
        row,
        micro_batch=work.micro_batch,
        sequence_length=work.sequence_length,
        precision=work.precision,
        activation_checkpointing=ac,
    )


def _unshardable(
    work: Workload,
    pool: PoolType,
    memory: TrainingMemory,
    holders: int,
    dpn: int,
    usable_gib: float,
    ac: bool,
) -> str:
    """Why no node count fits, and the capability the runtime would need for it to."""
    per_device = holders / dpn / GIB
    terms = {
        "gathered layers": memory.gathered,
        "activations kept": memory.activations,
        "backward working set": memory.working,
        "of which attention scores": memory.scores,
        "replicated state": memory.replicated,
    }
    parts = ", ".join(f"{name} {v * per_device:.1f}" for name, v in terms.items() if v * per_device >= 0.05)
    fused = _training_memory(work, pool, ac, fused=True) if memory.scores else memory
    if memory.scores and fused.fixed * per_device < usable_gib:
        missing = "fused (flash) attention on this line (it keeps each layer's attention scores)"
    else:
        missing = (
            "tensor and sequence parallel training (to split a layer's weights and a micro batch's "
            "activations across devices)"
        )
        if memory.scores:
            missing += " and fused attention"
    return (
        f"{memory.fixed * per_device:.1f} GiB per device at any node count ({parts}), "
        f"{usable_gib:.1f} GiB usable; the runtime lacks {missing}"
    )


def _training_option(
    work: Workload,
    pool: PoolType,
    dpn: int,
    holders: int,
    rank_budget: float,
    ac: bool,
    memory: TrainingMemory,
    tokens_per_device: float,
    hours_left: float | None,
    *,
    slowdown: float,
    startup: float,
    multi_node: Callable[[int], float],
    widest: int,
) -> Option | None:
    fixed, state = memory.fixed, memory.sharded
    processes = pool.processes_per_pod(dpn, "train")
    usable_gib = rank_budget * holders / dpn / GIB
    row = pool.capability.training
    max_nodes = row.max_nodes if row is not None else None
    too_many = "" if max_nodes is None else f"{pool.line} trains on at most {max_nodes} node(s) per job"
    if too_many and row is not None:
        too_many += f" ({row.max_nodes_why})"
    if rank_budget <= fixed:  # the per-rank working set alone exceeds the device: no node count helps
        nodes = work.nodes or 1
        need_gib = fixed * holders / dpn / GIB
        detail = _unshardable(work, pool, memory, holders, dpn, usable_gib, ac)
        if too_many and nodes > (max_nodes or 0):
            return Option(
                Stage.UNSUPPORTED, dpn, nodes, processes, ac, need_gib, usable_gib,
                holders_per_pod=holders, detail=f"{nodes} nodes: {too_many}; and {detail}",
            )  # fmt: skip
        return Option(
            Stage.MEMORY, dpn, nodes, processes, ac, need_gib, usable_gib,
            unshardable=True, holders_per_pod=holders, detail=detail,
        )  # fmt: skip
    # Nodes to hold the sharded state: state / (nodes x holders) + fixed <= budget.
    fit_nodes = math.ceil(state / (holders * (rank_budget - fixed)))
    if max_nodes is not None and work.nodes is not None and work.nodes > max_nodes:
        need_gib = memory.per_holder(work.nodes * holders) * holders / dpn / GIB
        fits = f"{work.nodes} nodes would hold the model"
        if need_gib > usable_gib:
            fits = (
                f"{work.nodes} nodes would still need {need_gib:.1f} GiB per device, {usable_gib:.1f} usable"
            )
        return Option(
            Stage.UNSUPPORTED, dpn, work.nodes, processes, ac, need_gib, usable_gib,
            holders_per_pod=holders, detail=f"{fits}, but {too_many}",
        )  # fmt: skip
    if max_nodes is not None and work.nodes is None and fit_nodes > max_nodes:  # the runtime's node limit
        return Option(
            Stage.MEMORY, dpn, fit_nodes, processes, ac, fit_nodes=fit_nodes, needed=fit_nodes,
            limit=max_nodes, holders_per_pod=holders,
            detail=f"needs {fit_nodes} nodes to hold the model, and {too_many}",
        )  # fmt: skip
    node_speed = dpn * tokens_per_device * (CHECKPOINTING_SPEEDUP if ac else 1.0)
    deadline_nodes = 1
    if hours_left is not None:
        need = work.tokens * slowdown / (max(hours_left - startup, 1e-9) * 3600.0)
        deadline_nodes = speed.nodes_for(need, node_speed, multi_node)
    if work.nodes is not None:
        nodes = base = work.nodes
    else:
        base = max(1, fit_nodes, deadline_nodes)
        if max_nodes is not None and base > max_nodes:  # the deadline needs more nodes than the line runs
            return Option(
                Stage.DEADLINE, dpn, max_nodes, processes, ac, nodes_needed=max_nodes, fit_nodes=fit_nodes,
                base_nodes=base, needed=base, limit=max_nodes, holders_per_pod=holders,
            )  # fmt: skip
        if base > 1 and dpn < widest and work.devices_per_node is None:
            return None  # spanning nodes takes whole nodes; the widest count covers it
        nodes = _batch_nodes(work, holders, base)
    # On cpu pools a device is a worker slot and ranks of one job may share a node (see the engine).
    needed = math.ceil(nodes * dpn / pool.devices_per_node) if pool.family == "cpu" else nodes
    sizes = {"nodes_needed": needed, "fit_nodes": fit_nodes, "base_nodes": base, "holders_per_pod": holders}
    if work.batch_size % (nodes * holders * work.micro_batch):
        return Option(Stage.BATCH, dpn, nodes, processes, ac, **sizes)
    need_gib = memory.per_holder(nodes * holders) * holders / dpn / GIB
    if need_gib > usable_gib:
        return Option(Stage.MEMORY, dpn, nodes, processes, ac, need_gib, usable_gib, **sizes)
    tps = nodes * node_speed * multi_node(nodes)
    hours = startup + work.tokens / (tps * 3600.0) * slowdown
    price = nodes * dpn / pool.devices_per_node * pool.price_per_node_hour
    cost = price * hours
    late = hours_left is not None and hours > hours_left
    return Option(
        Stage.DEADLINE if late else Stage.OK,
        dpn,
        nodes,
        processes,
        ac,
        need_gib,
        usable_gib,
        tps,
        hours,
        price,
        cost,
        cost / work.tokens * 1e6,
        limit=hours_left if late and hours_left is not None else 0.0,
        **sizes,
    )


def _batch_nodes(work: Workload, ranks: int, nodes: int) -> int:
    """The smallest node count >= nodes whose ranks split the global batch evenly (nodes if none does)."""
    for n in range(nodes, work.batch_size // (ranks * work.micro_batch) + 1):
        if work.batch_size % (n * ranks * work.micro_batch) == 0:
            return n
    return nodes


def _inference(work: Workload, pool: PoolType, defaults: Defaults, rates: Rates) -> tuple[Option, ...]:
    counts = _device_counts(work, pool)
    if counts is None:
        return (Option(Stage.DEVICES, work.devices_per_node or 0, 0, needed=work.devices_per_node or 0),)
    refused = pool.refusal("inference")
    if refused is not None:
        return (Option(Stage.UNSUPPORTED, work.devices_per_node or 0, 0, detail=refused),)
    device = pool.device
    usable_gib = device.memory_gib * defaults.usable_memory_fraction
    replicas = work.replicas
    found = []
    for dpn in counts:
        degree = pool.tensor_parallel(dpn)
        nodes = -(-replicas // (pool.devices_per_node // dpn))
        need_gib = _inference_need_gib(work, pool, dpn, degree)
        if need_gib is None:
            detail = _no_split(work, pool, degree)
            found.append(Option(Stage.UNSUPPORTED, dpn, replicas, degree, nodes_needed=nodes, detail=detail))
            continue
        if need_gib > usable_gib:
            found.append(
                Option(Stage.MEMORY, dpn, replicas, degree, False, need_gib, usable_gib, nodes_needed=nodes)
            )
            continue
        # A decode step reads the weights and the live KV cache once, and computes one token per sequence.
        step = speed.decode_step(
            bytes_read=work.weights_bytes + KV_TRAFFIC * work.kv_bytes,
            flops=work.max_batch * work.flops_per_token,
            devices=dpn,
            device=device,
            precision=SERVING_PRECISION,
            speed=rates,
            replica_retention=rates.replica_retention,
            factor=rates.factor,
        )
        per_sequence = 1.0 / step.seconds
        tps = replicas * work.max_batch * per_sequence
        price = replicas * dpn / pool.devices_per_node * pool.price_per_node_hour
        target, floor = work.target_tokens_per_second, work.min_tokens_per_second_per_sequence
        stage, limit = Stage.OK, 0.0
        if per_sequence < floor:
            stage, limit = Stage.LATENCY, floor
        elif target is not None and tps < target:
            stage, limit = Stage.THROUGHPUT, target
        found.append(
            Option(
                stage,
                dpn,
                replicas,
                degree,
                False,
                need_gib,
                usable_gib,
                tps,
                None,
                price,
                None,
                price / (tps * 3600.0) * 1e6,
                nodes_needed=nodes,
                limit=limit,
                tokens_per_second_per_sequence=per_sequence,
            )
        )
    return tuple(found)


def _inference_need_gib(work: Workload, pool: PoolType, dpn: int, degree: int) -> float | None:
    """GiB per device of one replica on `dpn` devices at the engine's `degree` (None: it cannot split)."""
    row = pool.capability.serving
    assert row is not None
    held = inference_rank_bytes(
        work.shape, row, degree, max_batch=work.max_batch, context_length=work.context_length
    )
    if held is None:
        return None
    return sum(held) * INFERENCE_OVERHEAD * degree / dpn / GIB


def _no_split(work: Workload, pool: PoolType, degree: int) -> str:
    shape, row = work.shape, pool.capability.serving
    engine = row.engine if row else pool.line
    return (
        f"{engine} cannot split {shape.heads} heads, {shape.kv_heads} KV heads and an MLP of "
        f"{shape.intermediate} into {degree} tensor-parallel ranks"
    )
