"""Prometheus metrics of the operator (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

JOBS = Gauge("llamaop_jobs", "LlamaJobs by phase", ["phase"])
PLACEMENT_LATENCY = Histogram(
    "llamaop_placement_latency_seconds",
    "Time from a job being queued for planning to its placement decision",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PLAN_DURATION = Histogram(
    "llamaop_plan_duration_seconds",
    "Wall time of one planner run over the queue",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
DECISIONS = Counter("llamaop_decisions_total", "Planner decisions by pool and reason", ["pool", "reason"])
ACCRUED_COST = Gauge("llamaop_accrued_cost_dollars", "Accrued cost of LlamaJobs", ["namespace", "pool"])
FAILOVERS = Counter("llamaop_failovers_total", "Jobs moved off a pool", ["pool", "reason"])
API_REQUESTS = Counter("llamaop_api_requests_total", "Kubernetes API calls the operator made", ["verb"])
UNSCHEDULABLE = Counter(
    "llamaop_unschedulable_pods_total",
    "Worker pods the scheduler refused for a resource the operator had booked (each one is a bug report)",
    ["pool", "resource"],
)
POD_WATCH_EVENTS = Counter("llamaop_pod_watch_events_total", "Cluster-wide pod watch events", ["type"])
POD_WATCH_BYTES = Counter("llamaop_pod_watch_bytes_total", "Bytes of cluster-wide pod watch events")
POD_WATCH_RELISTS = Counter("llamaop_pod_watch_relists_total", "Full lists of the cluster's pods")
PODS_COUNTED = Gauge("llamaop_pods_counted", "Pods whose requests count against some node")
API_ERRORS = Counter("llamaop_api_errors_total", "Kubernetes API calls that failed", ["verb", "kind"])


def serve(port: int) -> None:
    if port > 0:
        start_http_server(port)
