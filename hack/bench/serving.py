"""Serving tokens/s of one server command: start it, wait until healthy, send concurrent completions.

The server gets its port in LLAMAOP_PORT (the runtime, and through `llama_runtime launch` vLLM, read it).
Each request asks for --max-tokens greedy tokens (vLLM ignores EOS; the runtime stops at EOS);
tokens/s counts the completion tokens the servers report, over the wall time of all requests.

  python hack/bench/serving.py --name tp1 -- python -m llama_runtime serve --backend cpu --model tiny
  LLAMAOP_DEVICES=2 python hack/bench/serving.py --name tp2 -- python -m llama_runtime launch serve ...
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--health", default="/healthz", help="/healthz (llama-runtime) or /health (vLLM)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--startup-timeout", type=float, default=900)
    parser.add_argument("--model-name", default="bench", help="served model name the requests ask for")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    port = free_port()
    env = dict(os.environ, LLAMAOP_PORT=str(port), LLAMAOP_SERVED_MODEL_NAME=args.model_name)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "workloads"), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    log = open(f"/tmp/bench-serving-{args.name}.log", "w")  # noqa: SIM115  the server writes it
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        while not healthy(base + args.health):
            if proc.poll() is not None:
                print(f"RESULT {args.name}: server exited {proc.returncode}; see {log.name}", flush=True)
                return 1
            if time.perf_counter() - t0 > args.startup_timeout:
                print(f"RESULT {args.name}: not healthy after {args.startup_timeout:.0f} s", flush=True)
                return 1
            time.sleep(1)
        startup = time.perf_counter() - t0
        # ignore_eos is vLLM's; the runtime ignores unknown fields. Either way usage counts real tokens.
        body = {"model": args.model_name, "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True}
        prompts = [
            f"Request {i}: the miller's daughter walked to the market and" for i in range(args.requests)
        ]
        post(base + "/v1/completions", {**body, "prompt": "warm up", "max_tokens": 4}, 600)

        def one(prompt: str) -> tuple[int, float]:
            start = time.perf_counter()
            doc = post(base + "/v1/completions", {**body, "prompt": prompt}, 1800)
            return int(doc["usage"]["completion_tokens"]), time.perf_counter() - start

        t1 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            done = list(pool.map(one, prompts))
        elapsed = time.perf_counter() - t1
        tokens = sum(n for n, _ in done)
        p50 = statistics.median(s for _, s in done)
        detail = f"{tokens} tokens, {args.requests} requests, concurrency {args.concurrency}, {elapsed:.1f} s"
        detail += f"; p50 latency {p50:.2f} s; startup {startup:.0f} s"
        print(f"RESULT {args.name}: {tokens / elapsed:,.1f} tokens/s ({detail})", flush=True)
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
