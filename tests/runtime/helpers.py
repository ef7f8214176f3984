"""Running `python -m llama_runtime` and `torchrun` as the operator would, and reading their JSON logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ROOT / "workloads"
# Small and fast: one thread per process, no metrics port (tests may run side by side).
BASE_ARGS = ["--backend", "cpu", "--threads", "1", "--metrics-port", "0", "--seq-len", "64"]


def runtime_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMAOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WORKLOADS), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never patch a real pod from a test
    env.update(extra)
    return env


def cli(*args: str, python: str = sys.executable, torchrun: int = 0) -> list[str]:
    if torchrun:
        launcher = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
        return [*launcher, "-m", "llama_runtime", *args]
    return [python, "-m", "llama_runtime", *args]


def run(
    args: list[str], timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env or runtime_env(), cwd=ROOT
    )


def events(stdout: str, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines (torchrun's own lines and anything else are skipped)."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event is None or doc.get("event") == event:
                out.append(doc)
    return out


def losses(stdout: str) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(stdout, "progress")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET (no body) or POST JSON; the status and the decoded JSON (or text) of the answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    try:
        return code, json.loads(raw)
    except json.JSONDecodeError:
        return code, raw.decode()


def wait_healthy(proc: subprocess.Popen[str], url: str, timeout: float) -> None:
    """Until `url`/healthz answers 200; fails with the server's output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"server exited {proc.returncode}: {out}{err}")
        try:
            if request(url + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not healthy within {timeout} s"
        time.sleep(0.3)
