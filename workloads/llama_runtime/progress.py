"""Rank 0's progress: the `llamaop.io/progress` annotation on its own pod, patched from a thread.

Standard library only (urllib + the service account's CA), so worker images need no Kubernetes client.
Outside a pod there is no service-account token and reporting is a quiet no-op.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llama_runtime import contract
from llama_runtime.log import Logger

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Measured:
    """This process's timing: start-up, the warm-up steps left out, and the steps timed after them."""

    startup_seconds: float
    warmup_steps: int
    warmup_seconds: float
    steps: int
    seconds: float
    tokens_per_step: int

    @property
    def tokens_per_second(self) -> float | None:
        return self.steps * self.tokens_per_step / self.seconds if self.steps and self.seconds > 0 else None

    @property
    def compile_seconds(self) -> float | None:
        """The warm-up steps' time beyond as many steady steps (compilation, allocator and data warm-up)."""
        if not self.steps or self.seconds <= 0:
            return None
        return max(0.0, self.warmup_seconds - self.warmup_steps * self.seconds / self.steps)

    def fields(self) -> dict[str, float | int | None]:
        """The annotation's measurement fields (contract.PROGRESS_FIELDS)."""
        rate, compiled = self.tokens_per_second, self.compile_seconds
        return {
            "startupSeconds": round(self.startup_seconds, 3),
            "warmupSteps": self.warmup_steps,
            "compileSeconds": None if compiled is None else round(compiled, 3),
            "measuredSteps": self.steps,
            "measuredTokensPerSecond": None if rate is None else round(rate, 1),
        }


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float | None
    tokens_per_second: float
    eta_seconds: float | None
    measured: Measured | None = None

    def to_json(self, now: datetime | None = None) -> str:
        body: dict[str, object] = {
            "step": self.step,
            "totalSteps": self.total_steps,
            "loss": None if self.loss is None else round(self.loss, 5),
            "tokensPerSecond": round(self.tokens_per_second, 1),
            "etaSeconds": None if self.eta_seconds is None else round(self.eta_seconds),
        }
        if self.measured is not None:
            body |= {k: v for k, v in self.measured.fields().items() if v is not None}
        body["updated"] = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps(body, separators=(",", ":"))


class PodAnnotator:
    """PATCHes one annotation onto one pod with a JSON merge patch."""

    def __init__(self, url: str, token_file: Path, context: ssl.SSLContext | None) -> None:
        self.url, self._token_file, self._context = url, token_file, context

    @classmethod
    def in_cluster(cls, env: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR) -> PodAnnotator | None:
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        token = sa_dir / "token"
        if not host or not token.is_file():
            return None
        namespace = env.get(contract.POD_NAMESPACE) or _read(sa_dir / "namespace")
        pod = env.get(contract.POD_NAME) or env.get("HOSTNAME")
        if not namespace or not pod:
            return None
        host = f"[{host}]" if ":" in host else host
        context = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
        return cls(f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}", token, context)

    def patch(self, key: str, value: str, timeout: float = 10.0) -> None:
        body = json.dumps({"metadata": {"annotations": {key: value}}}).encode()
        request = urllib.request.Request(self.url, data=body, method="PATCH")
        request.add_header("Content-Type", "application/merge-patch+json")
        # Re-read every time: projected service-account tokens are rotated by the kubelet.
        request.add_header("Authorization", f"Bearer {self._token_file.read_text().strip()}")
        with urllib.request.urlopen(request, timeout=timeout, context=self._context) as response:
            response.read()


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


class ProgressReporter:
    """Keeps the newest progress and patches it at most every `interval` seconds, never blocking training.
    `close()` sends the last value whatever the interval, so the final state always lands."""

    def __init__(
        self,
        annotator: PodAnnotator | None,
        interval: float,
        log: Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._annotator, self._interval, self._log, self._clock = annotator, interval, log, clock
        self._pending: Progress | None = None
        self._last_sent = -float("inf")
        self._failures = 0
        self.sent = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        if annotator is not None:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()

    def report(self, progress: Progress) -> None:
        if self._annotator is None:
            return
        with self._cond:
            self._pending = progress
            self._cond.notify()

    def close(self, timeout: float = 15.0) -> None:
        if self._thread is None:
            return
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    wait = self._last_sent + self._interval - self._clock()
                    if self._pending is not None and wait <= 0:
                        break
                    self._cond.wait(timeout=None if self._pending is None else wait)
                progress, self._pending = self._pending, None
                closing = self._closed
            if progress is not None:
                self._send(progress)
            if closing:
                return

    def _send(self, progress: Progress) -> None:
        assert self._annotator is not None
        self._last_sent = self._clock()
        try:
            self._annotator.patch(contract.PROGRESS_ANNOTATION, progress.to_json())
            self.sent += 1
            self._failures = 0
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
            self._failures += 1
            if self._failures in (1, 10, 100):  # say so, but do not flood the log
                self._log.warning("progress annotation patch failed", error=str(e), failures=self._failures)


def eta(step: int, total: int, seconds_per_step: float) -> float | None:
    return max(0, total - step) * seconds_per_step if seconds_per_step > 0 else None
