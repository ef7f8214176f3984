"""`llamaop`: run the operator, explain a placement without a cluster, replay a trace.

llamaop run [--namespace NS ...] [--metrics-port N] [--peering NAME | --standalone]
llamaop plan FILE... [--pools FILE...] [--catalog FILE] [--json]
llamaop simulate TRACE [--pools FILE...] [--catalog FILE] [--truth FILE | --truth-seed N] [--json]
llamaop calibrate [--catalog FILE] [--write [FILE]] [--json]
llamaop trace [--seed N] [--jobs N] [--days D] [--out FILE]
llamaop report JOB [-n NS] [--kubeconfig FILE] | -f FILE  [--json] [--chart FILE.png | --no-chart]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from llama_operator import __version__, catalog
from llama_operator.planning import Decision, calibration, documents, plan, simulator, trace, tracegen, truth

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
    real = sim.add_mutually_exclusive_group()
    real.add_argument("--truth", type=Path, default=None, help="truth YAML: real speed over the estimate")
    real.add_argument(
        "--truth-seed", type=int, default=None, help="generate a truth (factors in [1/2, 2]) with this seed"
    )
    sim.add_argument("--json", action="store_true", help="print the comparison as JSON")

    cal = sub.add_parser("calibrate", help="fit the speed model to the published measurements and check it")
    cal.add_argument("--catalog", type=Path, default=None, help="YAML merged over the built-in catalog")
    cal.add_argument(
        "--write",
        nargs="?",
        type=Path,
        const=catalog.CALIBRATION_FILE,
        default=None,
        help="write the fit (default: the built-in catalog/calibration.yaml)",
    )
    cal.add_argument("--json", action="store_true", help="print the report as JSON")

    rep = sub.add_parser("report", help="a job's placement: estimated against measured per candidate, chart")
    rep.add_argument("job", nargs="?", default=None, help="LlamaJob name (read from the cluster)")
    rep.add_argument("-f", "--file", type=Path, default=None, help="the LlamaJob object as YAML or JSON")
    rep.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig's)")
    rep.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.add_argument("--chart", type=Path, default=None, help="PNG to write (default: JOB-report.png)")
    rep.add_argument("--no-chart", action="store_true", help="write no chart")

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
        if args.command == "calibrate":
            return calibrate_command(args, console)
        if args.command == "report":
            return report_command(args, console)
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
    status = decision.to_status(now=now, every_pool=True)
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


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
    for name in ("devices", "fits", "tokens/s", "tok/s/seq", "time", "$/h", "est. cost", "$/M tok", "now"):
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
            _num(c.tokens_per_second_per_sequence, ",.1f"),
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
    colour = {"placed": "green", "queued": "yellow", "rejected": "red", "probe": "cyan"}[decision.outcome]
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
    if args.truth is not None:
        real = truth.load(args.truth)
    elif args.truth_seed is not None:
        models = {j.spec.model.preset or "custom" for j in replay.jobs}
        real = truth.generate(cat.accelerators, models, seed=args.truth_seed)
    else:
        real = simulator.PRIOR
    comparison = simulator.compare(replay, catalog=cat, truth=real)
    if args.json:
        console.print_json(json.dumps(comparison.to_json()))
        return 0
    console.print(comparison_table(comparison, f"{replay.name}: {len(replay.jobs)} jobs on "
                                   f"{len(replay.pools)} pools, truth {real.name}"))  # fmt: skip
    return 0


def comparison_table(comparison: simulator.Comparison, title: str) -> Table:
    """Per policy: true cost, misses, and regret against the oracle (hack/bench/planner.py prints it too)."""
    table = Table(title=title, title_justify="left")
    columns = ("placement", "true cost", "regret", "done", "rejected", "deadline misses", "cost-cap misses",
               "SLO misses", "mean queue", "utilisation")  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name == "placement" else "right")
    regret = comparison.regret()
    for key, result in comparison.results.items():
        table.add_row(
            key,
            f"${result.total_cost:,.2f}",
            f"{regret[key]:.3f}",
            str(result.completed),
            str(result.rejected),
            f"{result.deadline_misses}/{result.deadline_jobs}",
            str(result.cost_cap_misses),
            str(result.service_level_misses),
            _duration(result.mean_queue_hours),
            f"{result.utilisation:.1%}",
        )
    table.caption = (
        f"regret: true cost over the oracle's on the {len(comparison.common())} jobs every run completed; "
        "baselines see the engine's estimates and constraints"
    )
    return table


# ------------------------------------------------------------------ calibrate


def _workload(m: catalog.Measurement) -> str:
    if m.kind == "train":
        return f"seq {m.sequence_length}, {m.nodes} node(s)" + (", AC" if m.activation_checkpointing else "")
    if m.kind == "decode":
        text = f"decode, batch {m.batch}, context {m.context}"
        if m.input_length and m.output_length:
            text += f", {m.in_flight} in flight of {m.input_length}/{m.output_length}"
            text += ", 1st token in" if m.first_token_included else ""
        return text
    return f"batch {m.batch}, {m.input_length}/{m.output_length}"


def _unit(m: catalog.Measurement) -> str:
    return {"train": "tok/s/dev", "decode": "tok/s/seq", "batch": "tok/s"}[m.kind]


def calibrate_command(args: argparse.Namespace, console: Console) -> int:
    cat = catalog.load(args.catalog)
    report = calibration.calibrate(cat)
    if args.write is not None:
        header = (
            "# The speed model's parameters fitted to measurements.yaml. Generated by `llamaop calibrate"
            " --write`;\n# a unit test refits and compares. Do not edit by hand.\n"
        )
        body = yaml.safe_dump(calibration.to_yaml(report.calibration), sort_keys=False, width=110)
        args.write.write_text(header + body)
    train = [r for r in report.rows if r.point.mode == "train"]
    serve = [r for r in report.rows if r.point.mode != "train"]
    summary = {
        "measurements": len(report.rows),
        "medianAbsErrorHeldOut": round(report.median_error(), 4),
        "medianAbsErrorHeldOutTraining": round(report.median_error(train), 4),
        "medianAbsErrorHeldOutInference": round(report.median_error(serve), 4),
        "inversions": [
            [i.faster.point.measurement.id, i.slower.point.measurement.id] for i in report.inversions
        ],
    }
    if args.json:
        rows = [
            {
                "id": r.point.measurement.id,
                "accelerator": r.point.measurement.accelerator,
                "measured": round(r.point.measured, 3),
                "fitted": round(r.fitted, 3),
                "heldOut": round(r.held_out, 3),
                "error": round(r.error, 4),
            }
            for r in report.rows
        ]
        console.print_json(json.dumps({"summary": summary, "rows": rows}))
        return 0
    table = Table(
        title="model vs measured (held out: fitted to all other measurements)", title_justify="left"
    )
    for name in ("measurement", "accelerator", "prec.", "model", "workload", "unit"):
        table.add_column(name)
    for name in ("measured", "fitted", "held out", "error"):
        table.add_column(name, justify="right")
    for r in report.rows:
        m = r.point.measurement
        table.add_row(
            m.id,
            m.accelerator,
            m.precision,
            m.model,
            _workload(m),
            _unit(m),
            f"{r.point.measured:,.1f}",
            f"{r.fitted:,.1f}",
            f"{r.held_out:,.1f}",
            f"{r.error:+.0%}",
            style="yellow" if abs(r.error) > 0.5 else "",
        )
    console.print(table)
    fit = report.calibration
    speeds = Table(title="fitted speeds (bf16)", title_justify="left")
    for name in ("accelerator", "train MFU", "serve bandwidth eff.", "serve compute eff.", "basis"):
        speeds.add_column(name, justify="left" if name in ("accelerator", "basis") else "right")
    for name, s in fit.accelerators.items():
        inf = s.inference["bf16"]
        basis = f"train: {s.basis['train']}; inference: {s.basis['inference']}"
        speeds.add_row(name, f"{s.train['bf16'].mfu:.3f}", f"{inf.bandwidth_efficiency:.3f}",
                       f"{inf.compute_efficiency:.3f}", basis)  # fmt: skip
    console.print(speeds)
    console.print(
        f"node retention {fit.node_retention:.3f} per doubling of nodes, replica retention "
        f"{fit.replica_retention:.3f} per doubling of a replica's devices",
        highlight=False,
    )
    console.print(
        f"median |error| held out: {summary['medianAbsErrorHeldOut']:.1%} over {len(report.rows)} "
        "measurements "
        f"(training {summary['medianAbsErrorHeldOutTraining']:.1%}, inference "
        f"{summary['medianAbsErrorHeldOutInference']:.1%}); ordering inversions between accelerators on "
        f"one workload: {len(report.inversions)}",
        highlight=False,
    )
    for inv in report.inversions:
        console.print(
            f"  inversion: {inv.faster.point.measurement.id} measured faster than "
            f"{inv.slower.point.measurement.id}, modelled slower",
            highlight=False,
        )
    return 0


def trace_command(args: argparse.Namespace) -> int:
    text = trace.dump(tracegen.generate(seed=args.seed, jobs=args.jobs, days=args.days))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


# ------------------------------------------------------------------ report


def _job_object(args: argparse.Namespace) -> dict[str, Any]:
    """The LlamaJob: from -f FILE, or from the cluster through the kubeconfig."""
    if args.file is not None:
        docs = [d for d in yaml.safe_load_all(args.file.read_text()) if isinstance(d, dict)]
        jobs = [d for d in docs if d.get("kind") == "LlamaJob"]
        if args.job:
            jobs = [d for d in jobs if (d.get("metadata") or {}).get("name") == args.job]
        if len(jobs) != 1:
            raise ValueError(f"{args.file}: expected one LlamaJob{f' named {args.job}' if args.job else ''}, "
                             f"found {len(jobs)}")  # fmt: skip
        return jobs[0]
    if not args.job:
        raise ValueError("name a job (llamaop report JOB) or give its object (-f FILE)")
    from kubernetes import client, config  # only this command talks to a cluster

    config.load_kube_config(config_file=args.kubeconfig)
    namespace = args.namespace
    if namespace is None:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    api = client.CustomObjectsApi()
    try:
        obj = api.get_namespaced_custom_object("llamaop.io", "v1alpha1", namespace, "llamajobs", args.job)
    except client.ApiException as e:
        raise ValueError(f"cannot read llamajob {namespace}/{args.job}: {e.status} {e.reason}") from e
    return dict(obj)


def report_command(args: argparse.Namespace, console: Console) -> int:
    from llama_operator import report as reports

    obj = _job_object(args)
    rep = reports.build(obj, now=datetime.now(UTC))
    chart = None
    if not args.no_chart:
        from llama_operator.report import chart as charts

        name = (obj.get("metadata") or {}).get("name", "job")
        chart = charts.render(rep, args.chart or Path(f"{name}-report.png"))
    if args.json:
        console.print_json(json.dumps({**rep.to_json(), "chart": str(chart) if chart else None}))
        return 0
    console.print(report_table(rep))
    colour = {"Failed": "red", "Queued": "yellow"}.get(rep.phase, "green")
    console.print(f"[{colour}]{rep.phase}[/] ({rep.reason}) {rep.message}", highlight=False)
    if rep.probes_cost:
        console.print(f"probes cost ${rep.probes_cost:,.4f} (in accruedCost ${rep.accrued_cost or 0:,.4f})",
                      highlight=False)  # fmt: skip
    if rep.actual is not None:
        a = rep.actual
        speed = f", {a.tokens_per_second:,.0f} tokens/s" if a.tokens_per_second else ""
        if a.phase == "Running":
            line = (f"running on {a.pool} for {_duration(a.hours)} so far (${_num(a.cost, ',.2f')}{speed}); "
                    f"estimated {_duration(a.est_hours)}, ${_num(a.est_cost, ',.2f')} in all")  # fmt: skip
        else:
            took, cost = _duration(a.hours), _num(a.cost, ",.2f")
            line = (f"run on {a.pool} ({a.phase}): {took} against {_duration(a.est_hours)} estimated, "
                    f"${cost} against ${_num(a.est_cost, ',.2f')} estimated{speed}")  # fmt: skip
        console.print(line, highlight=False)
    if chart is not None:
        console.print(f"chart: {chart}", highlight=False)
    return 0


def report_table(rep: Any) -> Table:
    table = Table(title=f"{rep.job}: estimated vs measured ({rep.tokens:,} tokens)", title_justify="left")
    table.add_column("pool")
    table.add_column("accelerator")
    for name in ("est. tok/s", "meas. tok/s", "est. time", "meas. time", "est. $/M", "meas. $/M",
                 "est. cost", "meas. cost", "start+compile", "probe $"):  # fmt: skip
        table.add_column(name, justify="right")
    table.add_column("probe / verdict")
    for r in rep.rows:
        style = "bold green" if r.chosen else ("dim" if not r.fits else "")
        startup = None
        if r.startup_seconds is not None:
            startup = r.startup_seconds + (r.compile_seconds or 0.0)
        probe = f"{r.probe_phase} ({r.probe_reason})" if r.probe_phase else "not probed"
        table.add_row(
            f"> {r.pool}" if r.chosen else r.pool,
            r.accelerator or "-",
            _num(r.est_tokens_per_second, ",.0f"),
            _num(r.measured_tokens_per_second, ",.0f"),
            _duration(r.est_hours),
            _duration(r.measured_hours),
            _num(r.est_cost_per_million, ",.4f"),
            _num(r.measured_cost_per_million, ",.4f"),
            _num(r.est_cost, ",.2f"),
            _num(r.measured_cost, ",.2f"),
            "-" if startup is None else f"{startup:,.0f} s",
            _num(r.probe_cost, ",.4f"),
            f"{probe}; {'Chosen' if r.chosen else r.verdict}",
            style=style,
        )
    return table


if __name__ == "__main__":
    raise SystemExit(main())
