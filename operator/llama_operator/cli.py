"""`llamaop`: run the operator, explain a placement without a cluster, replay a trace.

llamaop run [--namespace NS ...] [--metrics-port N] [--peering NAME | --standalone]
llamaop plan FILE... [--pools FILE...] [--catalog FILE] [--json]
llamaop simulate TRACE [--pools FILE...] [--catalog FILE] [--json]
llamaop trace [--seed N] [--jobs N] [--days D] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from llama_operator import __version__, catalog
from llama_operator.planning import Decision, documents, plan, simulator, trace, tracegen

# Exit codes: 0 every job placed or queued; 1 some job rejected; 2 bad input.
EXIT_REJECTED = 1
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamaop", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"llamaop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the operator (kopf)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="manage only their jobs")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="manage jobs of every namespace")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    peering = run.add_mutually_exclusive_group()
    peering.add_argument("--peering", default=None, help="kopf peering name (several replicas, one active)")
    peering.add_argument("--standalone", action="store_true", help="no peering (one replica)")

    plan_ = sub.add_parser("plan", help="print where LlamaJobs would go and why, without a cluster")
    plan_.add_argument("files", nargs="+", type=Path, help="LlamaJob YAML files or directories")
    _pool_arguments(plan_)
    plan_.add_argument("--now", type=_timestamp, default=None, help="planning time (RFC 3339; default: now)")
    plan_.add_argument("--json", action="store_true", help="print decisions as JSON status objects")

    sim = sub.add_parser("simulate", help="replay a job trace for the engine and the baselines")
    sim.add_argument("trace", type=Path, help="trace YAML (see `llamaop trace`)")
    _pool_arguments(sim)
    sim.add_argument("--json", action="store_true", help="print the comparison as JSON")

    gen = sub.add_parser("trace", help="write a seeded synthetic trace")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--jobs", type=int, default=400)
    gen.add_argument("--days", type=float, default=4.0)
    gen.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    return parser


def _pool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pools",
        nargs="+",
        type=Path,
        default=[],
        help="AcceleratorPool YAML files or directories (default: pools in the inputs, else one on-demand "
        "pool per catalog instance type)",
    )
    parser.add_argument("--catalog", type=Path, default=None, help="YAML merged over the built-in catalog")
    parser.add_argument(
        "--nodes-per-pool",
        type=int,
        default=documents.DEFAULT_NODES_PER_POOL,
        help="idle nodes of a pool without status.readyNodes or spec.maxNodes",
    )


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return _run(argv[1:])
    args = build_parser().parse_args(argv)
    # Piped output (logs, CI) gets room for the whole table instead of the 80 columns rich assumes.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    try:
        if args.command == "plan":
            return plan_command(args, console)
        if args.command == "simulate":
            return simulate_command(args, console)
        return trace_command(args)
    except (documents.DocumentError, ValueError, OSError) as e:
        Console(stderr=True).print(f"[red]error:[/] {e}", highlight=False)
        return EXIT_BAD_INPUT


def _run(argv: list[str]) -> int:
    """`llamaop run`: the controller is imported only here, so the other commands need no kopf."""
    from llama_operator.controller import main as controller

    parser = argparse.ArgumentParser(prog="llamaop run", description="start the operator (kopf)")
    controller.add_arguments(parser)
    return controller.run(parser.parse_args(argv))


# ------------------------------------------------------------------ plan


def plan_command(args: argparse.Namespace, console: Console) -> int:
    cat = catalog.load(args.catalog)
    jobs, pools_in_inputs = documents.load(args.files)
    if not jobs:
        raise documents.DocumentError(f"no LlamaJob in {', '.join(map(str, args.files))}")
    pools = documents.load(args.pools)[1] if args.pools else pools_in_inputs or documents.catalog_pools(cat)
    now = args.now or datetime.now(UTC)
    inventory = documents.inventory(pools, cat, nodes_per_pool=args.nodes_per_pool)
    decisions = plan(documents.requests(jobs, now), inventory, now=now, catalog=cat)
    if args.json:
        out = [
            {"key": d.key, "outcome": d.outcome, **_status(d, now)} for d in decisions
        ]  # fmt: skip
        console.print_json(json.dumps(out))
    else:
        for decision in decisions:
            console.print(candidate_table(decision))
            console.print(_verdict(decision), highlight=False)
            console.print()
    return EXIT_REJECTED if any(d.outcome == "rejected" for d in decisions) else 0


def _status(decision: Decision, now: datetime) -> dict[str, Any]:
    return decision.to_status(now=now).model_dump(by_alias=True, exclude_none=True, mode="json")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _duration(hours: float | None) -> str:
    if hours is None:
        return "-"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def candidate_table(decision: Decision) -> Table:
    table = Table(title=f"{decision.key}: candidates", title_justify="left", show_lines=False)
    for name in ("pool", "accelerator"):
        table.add_column(name)
    for name in ("devices", "fits", "tokens/s", "time", "$/h", "est. cost", "$/M tok", "now"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for c in decision.candidates:
        style = "bold green" if c.verdict == "Chosen" else ("dim" if not c.fits else "")
        devices = f"{c.nodes} x {c.devices_per_node}" if c.nodes else "-"
        table.add_row(
            c.pool,
            f"{c.accelerator} ({c.capacity_type})" if c.accelerator else "-",
            devices,
            "yes" if c.fits else "no",
            _num(c.tokens_per_second, ",.0f"),
            _duration(c.hours),
            _num(c.price_per_hour, ",.2f"),
            _num(c.cost, ",.2f"),
            _num(c.cost_per_million_tokens, ",.2f"),
            f"{'yes' if c.available_now else 'no'} ({c.free_devices} free)",
            f"{c.verdict}: {c.note}" if c.note else c.verdict,
            style=style,
        )
    return table


def _verdict(decision: Decision) -> str:
    colour = {"placed": "green", "queued": "yellow", "rejected": "red"}[decision.outcome]
    return f"[{colour}]{decision.outcome.upper()}[/] ({decision.reason}) {decision.message}"


# ------------------------------------------------------------------ simulate and trace


def simulate_command(args: argparse.Namespace, console: Console) -> int:
    cat = catalog.load(args.catalog)
    replay = trace.load(args.trace)
    if args.pools:
        pools = documents.load(args.pools)[1]
        replay = replay.with_pools(
            tuple(
                trace.TracePool(
                    p.metadata.name,
                    p.spec.max_nodes if p.spec.max_nodes is not None else args.nodes_per_pool,
                    p.spec,
                )
                for p in pools
            )
        )
    comparison = simulator.compare(replay, catalog=cat)
    if args.json:
        console.print_json(json.dumps(comparison.to_json()))
        return 0
    table = Table(
        title=f"{replay.name}: {len(replay.jobs)} jobs on {len(replay.pools)} pools", title_justify="left"
    )
    for name in (
        "placement",
        "total cost",
        "done",
        "rejected",
        "deadline misses",
        "mean queue",
        "utilisation",
    ):
        table.add_column(name, justify="left" if name == "placement" else "right")
    for result in comparison.results.values():
        table.add_row(
            "engine (job policy)" if result.ranking == "policy" else result.ranking,
            f"${result.total_cost:,.2f}",
            str(result.completed),
            str(result.rejected),
            f"{result.deadline_misses}/{result.deadline_jobs}",
            _duration(result.mean_queue_hours),
            f"{result.utilisation:.1%}",
        )
    table.add_row(
        "lower bound (no contention)", f"${comparison.lower_bound:,.2f}", str(comparison.lower_bound_jobs)
    )
    console.print(table)
    ratios = ", ".join(f"{name} {value:.3f}" for name, value in comparison.ratios().items())
    console.print(f"engine cost / other, on the jobs all completed: {ratios}", highlight=False)
    return 0


def trace_command(args: argparse.Namespace) -> int:
    text = trace.dump(tracegen.generate(seed=args.seed, jobs=args.jobs, days=args.days))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
