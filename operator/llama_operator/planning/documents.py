"""LlamaJob and AcceleratorPool YAML as the command line reads it, and the inventory it plans against
when there is no cluster."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from pydantic import ValidationError

from llama_operator.api.job import LlamaJob
from llama_operator.api.pool import AcceleratorPool, AcceleratorPoolSpec
from llama_operator.api.types import ACCELERATORPOOL_KIND, LLAMAJOB_KIND, POOL_LABEL
from llama_operator.catalog import Catalog
from llama_operator.planning import learning
from llama_operator.planning.inventory import Inventory, JobRequest, NodeState, PoolState
from llama_operator.planning.pools import PoolError, resolve_pool

DEFAULT_NODES_PER_POOL = 4


class DocumentError(ValueError):
    """A file that is not YAML, or an object that does not validate; the message names the file."""


def yaml_files(paths: Iterable[Path | str]) -> list[Path]:
    """The files named, with directories expanded to their *.yaml and *.yml files (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            out.append(path)
    return out


def load(paths: Iterable[Path | str]) -> tuple[list[LlamaJob], list[AcceleratorPool]]:
    """Every LlamaJob and AcceleratorPool in the files (other kinds are skipped)."""
    jobs: list[LlamaJob] = []
    pools: list[AcceleratorPool] = []
    for path in yaml_files(paths):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as e:
            raise DocumentError(f"{path}: {e}") from e
        for doc in docs:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc, dict) else "?"
            try:
                if kind == LLAMAJOB_KIND:
                    jobs.append(LlamaJob.model_validate(doc))
                elif kind == ACCELERATORPOOL_KIND:
                    pools.append(AcceleratorPool.model_validate(doc))
            except ValidationError as e:
                raise DocumentError(f"{path}: {kind} {name}: {_errors(e)}") from e
    return jobs, pools


def _errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def catalog_pools(catalog: Catalog) -> list[AcceleratorPool]:
    """One on-demand pool per priced instance type of the catalog, named after it."""
    pools = []
    for itype, entry in catalog.instance_types.items():
        if entry.price is None:
            continue
        name = itype.replace(".", "-")
        spec = AcceleratorPoolSpec(node_selector={POOL_LABEL: name}, instance_type=itype)
        pools.append(AcceleratorPool.model_validate({"metadata": {"name": name}, "spec": spec}))
    return pools


def inventory(
    pools: Sequence[AcceleratorPool], catalog: Catalog, *, nodes_per_pool: int = DEFAULT_NODES_PER_POOL
) -> Inventory:
    """Idle nodes for each pool (status.readyNodes, else spec.maxNodes, else `nodes_per_pool`), with
    status.freeDevices, when present, spread over them fullest-first."""
    states = []
    for pool in pools:
        status = pool.status
        count = nodes_per_pool if pool.spec.max_nodes is None else pool.spec.max_nodes
        if status is not None and status.ready_nodes is not None:
            count = status.ready_nodes
        try:
            per_node = resolve_pool(pool.spec, catalog).devices_per_node
        except PoolError:
            per_node = 0  # the engine reports the pool as invalid
        free = count * per_node
        if status is not None and status.free_devices is not None:
            free = min(free, status.free_devices)
        nodes = []
        for i in range(count):
            here = min(per_node, free)
            free -= here
            nodes.append(
                NodeState(f"{pool.metadata.name}-{i}", pool.metadata.name, used_devices=per_node - here)
            )
        states.append(
            PoolState(
                pool.metadata.name,
                pool.spec,
                tuple(nodes),
                cooldown_until=status.cooldown_until if status else None,
                learned=learning.factors(status.learned_speeds) if status else {},
            )
        )
    return Inventory(tuple(states))


def requests(jobs: Sequence[LlamaJob], now: datetime) -> list[JobRequest]:
    """Job requests; jobs without a creation time count as created a second apart in file order."""
    count = len(jobs)
    return [
        JobRequest(job.key(), job.spec, job.metadata.creation_timestamp or now - timedelta(seconds=count - i))
        for i, job in enumerate(jobs)
    ]
