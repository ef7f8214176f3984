"""Run the real operator (`llamaop run`) as a subprocess against a cluster, for the cluster tiers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.kube import ROOT, Kubectl, wait_for

CRDS = ROOT / "crds"
POOLS = ROOT / "examples" / "pools"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_api(kubectl: Kubectl) -> None:
    """The CRDs and the example AcceleratorPools, as a user would apply them."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for crd in ("llamajobs.llamaop.io", "acceleratorpools.llamaop.io"):
        kubectl.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    pools = os.environ.get("LLAMAOP_TEST_POOLS", str(POOLS))  # another cluster may need other pools
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", pools)


class Operator:
    """One `llamaop run` process; start, SIGKILL and start again."""

    running: set[Operator] = set()
    """Operators of this test session that are up (a test that needs the cluster to itself stops them)."""

    def __init__(
        self, env: dict[str, str], log_path: Path, *extra: str, namespaces: Sequence[str] = ()
    ) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.extra = extra
        self.scope = [f"--namespace={ns}" for ns in namespaces] or ["--all-namespaces"]
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        cmd = [
            sys.executable, "-m", "llama_operator.cli", "run", *self.scope, "--standalone",
            "--metrics-port", str(self.metrics_port), "--health-port", "0", "--pool-cooldown", "30",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        Operator.running.add(self)
        wait_for(self._metrics_up, timeout=60, what="operator metrics endpoint")

    def _metrics_up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}; log: {self.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=1):
                return True
        except OSError:
            return False

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def samples(self) -> dict[str, float]:
        """One scrape, each sample name summed over its labels (e.g. llamaop_api_requests_total)."""
        from prometheus_client.parser import text_string_to_metric_families

        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    def wait_reconciling(self, timeout: float = 120) -> None:
        """Until the first reconcile pass has run: every index (jobs, pods, nodes, pools) is listed."""
        wait_for(
            lambda: self.samples().get("llamaop_plan_duration_seconds_count", 0) > 0,
            timeout=timeout,
            what="the operator's first reconcile pass",
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, exactly like a crashed pod."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        Operator.running.discard(self)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
