"""`llama_runtime serve`: an OpenAI-compatible HTTP server over the batching engine.

GET /healthz (200 once the model is loaded, 503 before), GET /metrics, GET /v1/models,
POST /v1/completions and /v1/chat/completions. The port listens at once so probes see "loading".

Under torchrun the replica is tensor parallel: rank 0 runs this server and the engine's batching; the
other ranks load their shards and follow rank 0's batches (serve/group.py), with no HTTP of their own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llama_runtime.backends import DistInfo
from llama_runtime.config import RunConfig
from llama_runtime.log import Logger, make_logger
from llama_runtime.metrics import ServeMetrics
from llama_runtime.serve.engine import Completion, Engine, Request
from llama_runtime.serve.loading import load_for_inference
from llama_runtime.tokenizer import Tokenizer

REQUEST_TIMEOUT = 600.0


class BadRequest(Exception):
    pass


class Service:
    """What the handlers need: the engine once loaded, metrics and the request limits."""

    def __init__(self, cfg: RunConfig, metrics: ServeMetrics, log: Logger) -> None:
        self.cfg, self.metrics, self.log = cfg, metrics, log
        self.model_name = cfg.served_model_name or cfg.job_name or cfg.model
        self.engine: Engine | None = None
        self.tokenizer: Tokenizer | None = None
        self.error: str | None = None

    def _common(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("stream"):
            raise BadRequest("stream is not supported; send stream: false")
        if body.get("n", 1) != 1:
            raise BadRequest("only n = 1 is supported")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", self.cfg.max_new_tokens))
        temperature, top_p = body.get("temperature", 1.0), body.get("top_p", 1.0)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(max_tokens, int) or not 0 < max_tokens <= self.cfg.max_new_tokens:
            raise BadRequest(f"max_tokens must be an integer in 1..{self.cfg.max_new_tokens}")
        if not isinstance(temperature, int | float) or temperature < 0:
            raise BadRequest("temperature must be a number >= 0")
        if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise BadRequest("top_p must be in (0, 1]")
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop must be a string or a list of strings")
        seed = body.get("seed")
        return {
            "max_tokens": max_tokens,
            "temperature": float(temperature),
            "top_p": float(top_p),
            "stop": stop,
            "seed": seed if isinstance(seed, int) else None,
        }

    def _run(self, prompts: list[list[int]], params: dict[str, Any]) -> list[Completion]:
        assert self.engine is not None
        futures: list[Future[Completion]] = [self.engine.submit(Request(prompt=p, **params)) for p in prompts]
        return [f.result(timeout=REQUEST_TIMEOUT) for f in futures]

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.tokenizer is not None
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = prompt
        else:
            raise BadRequest("prompt must be a string or a non-empty list of strings")
        params = self._common(body)
        bos = [self.tokenizer.bos_id] if self.tokenizer.bos_id is not None else []
        results = self._run([bos + self.tokenizer.encode(p) for p in prompts], params)
        choices = [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ]
        return self._response("text_completion", "cmpl", choices, results)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.tokenizer is not None
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            raise BadRequest("messages must be a non-empty list of {role, content} objects")
        params = self._common(body)
        results = self._run([self.tokenizer.chat_prompt(messages)], params)
        choices = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.text},
                "finish_reason": r.finish_reason,
            }
            for r in results
        ]
        return self._response("chat.completion", "chatcmpl", choices, results)

    def _response(
        self, obj: str, prefix: str, choices: list[Any], results: list[Completion]
    ) -> dict[str, Any]:
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion_tokens = sum(len(r.tokens) for r in results)
        return {
            "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
            "object": obj,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "llama-runtime"

        def log_message(self, format: str, *args: Any) -> None:  # access logs would flood; metrics count
            pass

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, doc: dict[str, Any]) -> None:
            self._send(code, json.dumps(doc).encode())

        def _error(self, code: int, message: str, kind: str) -> None:
            self._json(code, {"error": {"message": message, "type": kind, "code": code}})

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                if service.engine is not None:
                    self._json(200, {"status": "ok"})
                else:
                    self._json(
                        503, {"status": "failed" if service.error else "loading", "error": service.error}
                    )
            elif path == "/metrics":
                self._send(200, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/v1/models":
                model = {
                    "id": service.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "llama-operator",
                }
                self._json(200, {"object": "list", "data": [model]})
            else:
                self._error(404, f"no route {path}", "not_found")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            route = {"/v1/completions": service.completions, "/v1/chat/completions": service.chat}.get(path)
            t0 = time.perf_counter()
            code = 200
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if route is None:
                    code = 404
                    return self._error(404, f"no route {path}", "not_found")
                if service.engine is None:
                    code = 503
                    return self._error(503, "the model is still loading", "unavailable")
                try:
                    body = json.loads(raw or b"null")
                except json.JSONDecodeError as e:
                    raise BadRequest(f"body is not JSON: {e}") from None
                if not isinstance(body, dict):
                    raise BadRequest("body must be a JSON object")
                self._json(200, route(body))
            except BadRequest as e:
                code = 400
                self._error(400, str(e), "invalid_request_error")
            except FutureTimeout:
                code = 504
                self._error(504, "generation timed out", "timeout")
            except Exception as e:  # report, keep serving
                code = 500
                service.log.error("request failed", path=path, error=repr(e))
                self._error(500, "internal error", "server_error")
            finally:
                service.metrics.requests.labels(endpoint=path, code=str(code)).inc()
                service.metrics.latency.observe(time.perf_counter() - t0)
            return None

    return Handler


def run(cfg: RunConfig) -> None:
    log = make_logger(cfg.log_level, job=cfg.job_name or None)
    metrics = ServeMetrics()
    rank = DistInfo.from_env().rank
    if rank != 0:  # a follower of a tensor-parallel replica: no HTTP, rank 0 shares the work
        loaded = load_for_inference(cfg, log)
        assert loaded.group is not None
        loaded.group.barrier()
        Engine(
            loaded.model, loaded.tokenizer, loaded.device, cfg.max_batch, metrics, group=loaded.group
        ).follow()
        return
    service = Service(cfg, metrics, log)
    server = ThreadingHTTPServer((cfg.host, cfg.port), make_handler(service))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log.info("listening", host=cfg.host, port=server.server_address[1])
    try:
        loaded = load_for_inference(cfg, log)
        if loaded.group is not None:
            loaded.group.barrier()  # ready means every rank holds its shard
        service.tokenizer = loaded.tokenizer
        service.engine = Engine(
            loaded.model, loaded.tokenizer, loaded.device, cfg.max_batch, metrics, group=loaded.group
        )
        log.info(
            "ready",
            port=server.server_address[1],
            weights=loaded.source,
            device=str(loaded.device),
            tensor_parallel=loaded.group.world if loaded.group else 1,
        )
        thread.join()
    except BaseException as e:
        service.error = str(e)
        raise
    finally:
        server.shutdown()
        if service.engine is not None:
            service.engine.close()
