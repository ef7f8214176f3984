"""Prometheus metrics of training (rank 0) and serving; names carry the llamaop_ prefix."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class TrainMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.step = Gauge("llamaop_train_step", "Optimizer steps completed", registry=r)
        self.total_steps = Gauge("llamaop_train_total_steps", "Optimizer steps planned", registry=r)
        self.loss = Gauge("llamaop_train_loss", "Mean training loss of the last step", registry=r)
        self.tokens_per_second = Gauge(
            "llamaop_train_tokens_per_second", "Global training tokens/s", registry=r
        )
        self.eta = Gauge("llamaop_train_eta_seconds", "Estimated seconds to the last step", registry=r)
        self.tokens = Counter("llamaop_train_tokens", "Training tokens processed (all ranks)", registry=r)
        self.checkpoints = Counter("llamaop_train_checkpoints", "Checkpoints written", registry=r)
        self.step_seconds = Histogram(
            "llamaop_train_step_seconds",
            "Wall time of one optimizer step",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )

    def serve(self, port: int) -> None:
        if port > 0:
            start_http_server(port, registry=self.registry)


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llamaop_serve_requests", "Requests answered", ["endpoint", "code"], registry=r
        )
        self.prompt_tokens = Counter("llamaop_serve_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generated_tokens = Counter("llamaop_serve_generated_tokens", "Tokens generated", registry=r)
        self.batch_size = Histogram(
            "llamaop_serve_batch_size",
            "Sequences per generation batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.queue = Gauge("llamaop_serve_queue_depth", "Requests waiting for a batch", registry=r)
        self.latency = Histogram(
            "llamaop_serve_request_seconds",
            "Request latency",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.tokens_per_second = Gauge(
            "llamaop_serve_tokens_per_second", "Generated tokens/s of the last batch", registry=r
        )
