"""Rank 0's progress annotation: found from the in-cluster environment, rate limited, always final."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llama_runtime.log import make_logger
from llama_runtime.progress import PodAnnotator, Progress, ProgressReporter

pytestmark = pytest.mark.runtime


class FakeApiServer:
    """Records PATCHes on loopback as the kube-apiserver would receive them."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.fail = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.patches.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(500 if outer.fail else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    yield fake
    fake.server.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress(step: int) -> Progress:
    return Progress(
        step=step, total_steps=100, loss=2.5 - step / 100, tokens_per_second=1234.56, eta_seconds=99.4
    )


def _wait_for(api: FakeApiServer, count: int) -> None:
    for _ in range(250):
        if len(api.patches) >= count:
            return
        threading.Event().wait(0.02)


def test_patches_are_rate_limited_and_the_last_one_always_lands(api: FakeApiServer, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-1\n")
    annotator = PodAnnotator(f"{api.url}/api/v1/namespaces/ns/pods/job-0", tmp_path / "token", None)
    clock = Clock()
    reporter = ProgressReporter(annotator, interval=10, log=make_logger("error"), clock=clock)
    reporter.report(_progress(1))
    _wait_for(api, 1)
    for step in range(2, 6):  # within the same interval: held back
        reporter.report(_progress(step))
    threading.Event().wait(0.3)
    assert len(api.patches) == 1
    (tmp_path / "token").write_text("secret-2\n")  # rotated tokens are picked up
    clock.now += 11  # the interval has passed: the newest value (5) goes out, 2..4 never do
    reporter.report(_progress(5))
    _wait_for(api, 2)
    reporter.report(_progress(6))
    reporter.close()  # the final value lands whatever the interval

    sent = [json.loads(p["body"]["metadata"]["annotations"]["llamaop.io/progress"]) for p in api.patches]
    assert [s["step"] for s in sent] == [1, 5, 6]
    assert api.patches[0]["path"] == "/api/v1/namespaces/ns/pods/job-0"
    assert api.patches[0]["headers"]["Content-Type"] == "application/merge-patch+json"
    assert api.patches[0]["headers"]["Authorization"] == "Bearer secret-1"
    assert api.patches[-1]["headers"]["Authorization"] == "Bearer secret-2"
    last = sent[-1]
    assert set(last) == {"step", "totalSteps", "loss", "tokensPerSecond", "etaSeconds", "updated"}
    assert (last["totalSteps"], last["loss"], last["tokensPerSecond"], last["etaSeconds"]) == (
        100,
        2.44,
        1234.6,
        99,
    )
    assert last["updated"].endswith("Z")


def test_failures_do_not_raise(api: FakeApiServer, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    api.fail = True
    reporter = ProgressReporter(
        PodAnnotator(f"{api.url}/api/v1/namespaces/ns/pods/p", tmp_path / "token", None),
        0,
        make_logger("error"),
    )
    reporter.report(_progress(1))
    reporter.close()
    assert len(api.patches) == 1 and reporter.sent == 0


def test_in_cluster_detection(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOSTNAME": "job-w-0"}
    assert PodAnnotator.in_cluster(env, tmp_path) is None  # no token: not in a pod, quietly nothing
    assert PodAnnotator.in_cluster({}, tmp_path) is None
    reporter = ProgressReporter(None, 10, make_logger("error"))
    reporter.report(_progress(1))
    reporter.close()
    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text("team-a")
    import ssl

    # A self-signed CA is not needed to build the context from a real path: use the system bundle.
    ca = Path(ssl.get_default_verify_paths().cafile or "")
    if not ca.is_file():
        pytest.skip("no system CA bundle to stand in for the service-account CA")
    (tmp_path / "ca.crt").write_bytes(ca.read_bytes())
    annotator = PodAnnotator.in_cluster({**env, "LLAMAOP_POD_NAME": "job-w-0-abc"}, tmp_path)
    assert annotator is not None
    assert annotator.url == "https://10.0.0.1:443/api/v1/namespaces/team-a/pods/job-w-0-abc"
    v6 = PodAnnotator.in_cluster({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert v6 is not None and v6.url == "https://[fd00::1]:443/api/v1/namespaces/team-a/pods/job-w-0"
