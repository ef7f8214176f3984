"""`serve`: health, metrics, OpenAI-style completions, and concurrent requests batched together."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.runtime.helpers import BASE_ARGS, ROOT, cli, free_port, request, runtime_env, wait_healthy

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def server(trained: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    args = [
        *BASE_ARGS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch",
        "8",
        "--max-new-tokens",
        "48",
    ]
    args += ["--checkpoint-dir", str(trained["checkpoint_dir"])]
    proc = subprocess.Popen(
        cli("serve", *args),
        env=runtime_env(LLAMAOP_SERVED_MODEL_NAME="tiny-test"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, 120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_completions_and_chat(server: str) -> None:
    code, doc = request(
        server + "/v1/completions", {"prompt": "Q: Where does Ada go? A:", "max_tokens": 16, "temperature": 0}
    )
    assert code == 200, doc
    assert doc["object"] == "text_completion" and doc["model"] == "tiny-test"
    choice = doc["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and isinstance(choice["text"], str)
    assert doc["usage"]["completion_tokens"] == 16 or choice["finish_reason"] == "stop"
    assert doc["usage"]["prompt_tokens"] == len(b"Q: Where does Ada go? A:") + 1  # bytes + BOS

    code, doc = request(
        server + "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stop": ["\n"]},
    )
    assert code == 200, doc
    assert doc["object"] == "chat.completion" and doc["choices"][0]["message"]["role"] == "assistant"
    assert "\n" not in doc["choices"][0]["message"]["content"]

    assert request(server + "/v1/completions", {"prompt": 3})[0] == 400
    assert request(server + "/v1/completions", {"prompt": "x", "max_tokens": 10_000})[0] == 400
    assert request(server + "/v1/nothing", {})[0] == 404
    assert request(server + "/v1/models")[1]["data"][0]["id"] == "tiny-test"


def test_concurrent_requests_are_batched_and_match_one_by_one(server: str) -> None:
    prompts = [f"At the {p}, {n}" for p in ("market", "mill", "garden", "library") for n in ("Ada", "Bram")]
    body = {"max_tokens": 24, "temperature": 0}
    alone = [
        request(server + "/v1/completions", {**body, "prompt": p})[1]["choices"][0]["text"] for p in prompts
    ]

    def metric(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    before = request(server + "/metrics")[1]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(
            pool.map(lambda p: request(server + "/v1/completions", {**body, "prompt": p}), prompts)
        )
    after = request(server + "/metrics")[1]
    assert all(code == 200 for code, _ in together)
    # Left padding and the shared KV cache must not change what greedy decoding produces.
    assert [doc["choices"][0]["text"] for _, doc in together] == alone
    batches = metric(after, "llamaop_serve_batch_size_count") - metric(
        before, "llamaop_serve_batch_size_count"
    )
    seqs = metric(after, "llamaop_serve_batch_size_sum") - metric(before, "llamaop_serve_batch_size_sum")
    assert seqs == len(prompts) and batches < len(prompts), (batches, seqs)
    assert metric(after, "llamaop_serve_generated_tokens_total") > 0


def test_healthz_and_metrics(server: str) -> None:
    assert request(server + "/healthz") == (200, {"status": "ok"})
    code, text = request(server + "/metrics")
    assert code == 200 and 'llamaop_serve_requests_total{code="200",endpoint="/v1/completions"}' in text
