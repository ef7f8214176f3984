"""`llamaop run`: start the operator (kopf) with the reconcile loop and the metrics endpoint."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta
from typing import Any

import kopf

from llama_operator import catalog as catalogs
from llama_operator.controller import handlers, logs, metrics, state
from llama_operator.controller.kube import Kube, load_config
from llama_operator.lifecycle.reconcile import Settings
from llama_operator.lifecycle.snapshot import Options
from llama_operator.planning import Decision, Inventory, JobRequest, plan

assert handlers  # imported for its kopf registrations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llamaop run` (the CLI calls this to build its subcommand)."""
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="manage only the LlamaJobs of these namespaces (pods of every namespace still count as used)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch the whole cluster (default)"
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    parser.add_argument("--health-port", type=int, default=8081, help="kopf liveness /healthz port (0: off)")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", default=None, help="kopf peering name (several replicas, one active)")
    peering.add_argument("--standalone", action="store_true", help="no peering (one replica; the default)")
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster or KUBECONFIG)"
    )
    parser.add_argument("--catalog", default=None, help="YAML merged over the built-in instance catalog")
    parser.add_argument("--cpu-image", default=None, help="default worker image for cpu pools")
    parser.add_argument("--cuda-image", default=None, help="default worker image for nvidia pools")
    parser.add_argument("--neuron-image", default=None, help="default worker image for neuron pools")
    parser.add_argument(
        "--image-pull-policy", default="IfNotPresent", choices=["Always", "IfNotPresent", "Never"]
    )
    parser.add_argument(
        "--pool-cooldown", type=float, default=600, help="seconds a pool is avoided after a failover"
    )
    parser.add_argument(
        "--cost-refresh", type=float, default=60, help="seconds between accrued-cost updates of a running job"
    )
    parser.add_argument(
        "--cost-writes-per-second",
        type=_positive,
        default=5,
        help="cap on accrued-cost updates in all (many jobs: each is refreshed less often)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["json", "console"], default="json")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def build_options(args: argparse.Namespace) -> Options:
    images = dict(Settings().default_images)
    for backend in ("cpu", "cuda", "neuron"):
        if getattr(args, f"{backend}_image", None):
            images[backend] = getattr(args, f"{backend}_image")
    settings = Settings(
        pool_cooldown=timedelta(seconds=getattr(args, "pool_cooldown", 600)),
        default_images=images,
        image_pull_policy=getattr(args, "image_pull_policy", "IfNotPresent"),
    )
    return Options(
        settings=settings,
        catalog=catalogs.load(getattr(args, "catalog", None)),
        cost_every=timedelta(seconds=getattr(args, "cost_refresh", 60)),
        cost_writes_per_second=getattr(args, "cost_writes_per_second", 5),
    )


def run(args: argparse.Namespace) -> int:
    logs.configure(getattr(args, "log_level", "INFO"), json=getattr(args, "log_format", "json") == "json")
    options = build_options(args)

    def planner(jobs: list[JobRequest], inventory: Inventory, now: datetime) -> list[Decision]:
        return plan(jobs, inventory, now=now, catalog=options.catalog)

    kube = Kube(load_config(getattr(args, "kubeconfig", None)))
    state.LOOP.configure(kube, options, planner)
    metrics.serve(getattr(args, "metrics_port", 8080))
    namespaces = list(getattr(args, "namespace", []) or [])
    state.LOOP.namespaces = namespaces
    peering = getattr(args, "peering", None)
    health = getattr(args, "health_port", 8081)
    kwargs: dict[str, Any] = {
        "standalone": peering is None,
        "clusterwide": not namespaces,
        "namespaces": namespaces or None,
        "liveness_endpoint": f"http://0.0.0.0:{health}/healthz" if health else None,
    }
    if peering:
        kwargs["peering_name"] = peering
    asyncio.run(kopf.operator(**{k: v for k, v in kwargs.items() if v is not None}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="llamaop run")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
