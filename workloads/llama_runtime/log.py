"""One JSON object per line on stdout (structlog when installed; the GPU bench host may lack it)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger(Protocol):
    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


class _JsonLogger:
    """The same line format as the structlog setup below, from the standard library alone."""

    def __init__(self, level: int, context: dict[str, Any]) -> None:
        self._level, self._context = level, context

    def _emit(self, level: str, event: str, kw: dict[str, Any]) -> None:
        if _LEVELS[level] < self._level:
            return
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"
        )
        line = {**self._context, **kw, "event": event, "level": level, "timestamp": stamp}
        sys.stdout.write(json.dumps(line, default=str) + "\n")
        sys.stdout.flush()

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw)


def make_logger(level: str = "info", use_structlog: bool = True, **context: Any) -> Logger:
    """A logger that writes `{"event": ..., "level": ..., "timestamp": ..., **context, **fields}` lines."""
    numeric = _LEVELS.get(level.lower(), 20)
    try:
        if not use_structlog:
            raise ImportError
        import structlog
    except ImportError:
        return _JsonLogger(numeric, context)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(default=str),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    logger: Logger = structlog.get_logger().bind(**context)
    return logger
