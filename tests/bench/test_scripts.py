"""Every benchmark script runs, at small sizes, as `make bench` runs it, and prints its ratio lines.

Each runs as a script (`python hack/bench/X.py`), so a file beside it that shadows a stdlib module, a
renamed import or a broken argument fails here, not in someone's `make bench`. The numbers are not
checked: at these sizes they mean nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "hack" / "bench"


def run(*cmd: str, timeout: float, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    )
    return proc.stdout


def script(name: str, *args: str, timeout: float = 300) -> str:
    return run(sys.executable, str(BENCH / name), *args, timeout=timeout)


def test_planner_prints_its_figures_against_first_fit() -> None:
    out = script("planner.py", "--jobs", "100", "--pools", "10")
    assert re.search(r"p99 [\d.]+ ms", out), out
    assert re.search(r"engine / first-fit: p50 [\d.]+x +p99 [\d.]+x", out), out


def test_replan_prints_each_pass_as_a_ratio_to_a_full_pass() -> None:
    out = script("replan.py", "--queued", "40", "--nodes", "22", "--repeat", "1")
    for case in ("no change", "one job changed", "one node freed"):
        assert re.search(rf"{case} +[\d.]+ ms CPU +ratio to a full pass [\d.]+", out), out


def test_runtime_prints_its_ratio_to_plain_transformers() -> None:
    out = script("runtime.py", "--only", "tiny", "--rounds", "1", "--steps", "2", "--threads", "1")
    assert re.search(r"tiny .* ratio=[\d.]+", out), out


def test_serving_prints_its_tokens_per_second() -> None:
    """One server as `make bench` starts it, at the smallest size (make bench divides TP 2 by TP 1)."""
    server = [sys.executable, "-m", "llama_runtime", "serve", "--backend", "cpu", "--model", "tiny"]
    args = ["--name", "smoke", "--requests", "2", "--concurrency", "2", "--max-tokens", "4"]
    out = script("serving.py", *args, "--", *server)
    assert re.search(r"RESULT smoke: [\d.,]+ tokens/s", out), out


def test_gpu_script_runs_its_step_on_cpu() -> None:
    """hack/bench/gpu.sh's training half on CPU (runtime_gpu.py's own smoke mode); its serving half needs
    CUDA and runs on a GPU machine only."""
    args = ["--backend", "cpu", "--model", "tiny", "--seq", "64", "--batch", "2", "--micro", "1"]
    args += ["--steps", "2", "--warmup", "1", "--modes", "eager"]
    env = {"PYTHON": sys.executable, "GPU_BENCH": "train"}
    out = run(str(BENCH / "gpu.sh"), *args, timeout=300, env=env)
    assert re.search(r"RESULT eager .* tokens/s=[\d,]+", out), out


@pytest.mark.timeout(1200)
def test_operator_at_scale_prints_its_ratios_to_the_floor() -> None:
    """Burst and backlog on a small bench cluster of its own ($LLAMAOP_CLUSTER_NAME-bench), removed after."""
    name = os.environ.get("LLAMAOP_CLUSTER_NAME", "llamaop") + "-bench"
    small = ["--jobs", "12", "--scale", "1", "--max-wait", "5", "--no-warmup"]  # seconds, not a study
    try:
        burst = script("operator_at_scale.py", *small, "--keep", timeout=600)
        backlog = script("operator_at_scale.py", *small, "--backlog", timeout=600)
    finally:
        subprocess.run(
            [str(ROOT / "hack/cluster.sh"), "down"],
            env={**os.environ, "LLAMAOP_CLUSTER_NAME": name},
            capture_output=True,
            check=False,
        )
    for case, out in (("burst", burst), ("backlog", backlog)):
        assert re.search(rf"ratio {case} operator/floor settle: [\d.]+", out), out
        assert re.search(rf"ratio {case} cluster\+operator CPU / floor cluster CPU: [\d.]+", out), out
        assert re.search(r"[\d.]+ API requests per job, [\d.]+ ms CPU per job", out), out
