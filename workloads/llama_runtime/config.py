"""The run's configuration: LLAMAOP_* environment (contract.py) overridden by command-line flags.

Import-light (no torch) so a bad configuration fails in well under a second with one clear line.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from llama_runtime import contract
from llama_runtime.errors import UserError
from llama_runtime.model import model_kwargs

BACKENDS = ("auto", "cpu", "cuda", "neuron", "xla")
PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class RunConfig:
    command: str  # train | serve
    backend: str = "auto"
    model: str = "tiny"
    model_dir: Path | None = None
    data_dir: Path | None = None
    precision: str | None = None  # None: the backend's default
    seed: int = 0
    steps: int = 100
    seq_len: int = 256
    batch_size: int = 8
    micro_batch: int = 0  # 0: the whole per-rank share in one forward
    learning_rate: float = 3e-4
    warmup_steps: int | None = None
    max_grad_norm: float = 1.0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    checkpoint_keep: int = 2
    activation_checkpointing: bool = False
    compile: bool | None = None  # None: the backend's default
    measure_after: int = 1  # steps of this process left out of the measured tokens/s
    launched_at: float | None = None  # Unix time the launcher started (None: when the run started)
    threads: int = 0  # torch intra-op threads on cpu; 0 leaves torch's choice
    host: str = "0.0.0.0"
    port: int = contract.DEFAULT_PORT
    max_batch: int = 8
    max_new_tokens: int = 128
    served_model_name: str = ""
    metrics_port: int = contract.DEFAULT_METRICS_PORT
    progress_interval: float = 10.0
    log_level: str = "info"
    job_name: str = ""


# Field -> (environment variable, parser); fields without a variable are flags only.
def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _path(value: str) -> Path | None:
    return Path(value) if value else None


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "backend": (contract.BACKEND, str),
    "model": (contract.MODEL, str),
    "model_dir": (contract.MODEL_DIR, _path),
    "data_dir": (contract.DATA_DIR, _path),
    "precision": (contract.PRECISION, str),
    "seed": (contract.SEED, int),
    "steps": (contract.STEPS, int),
    "seq_len": (contract.SEQ_LEN, int),
    "batch_size": (contract.BATCH_SIZE, int),
    "micro_batch": (contract.MICRO_BATCH, int),
    "learning_rate": (contract.LEARNING_RATE, float),
    "warmup_steps": (contract.WARMUP_STEPS, int),
    "checkpoint_dir": (contract.CHECKPOINT_DIR, _path),
    "checkpoint_every": (contract.CHECKPOINT_EVERY, int),
    "checkpoint_keep": (contract.CHECKPOINT_KEEP, int),
    "activation_checkpointing": (contract.ACTIVATION_CHECKPOINTING, _flag),
    "compile": (contract.COMPILE, _flag),
    "measure_after": (contract.MEASURE_AFTER, int),
    "launched_at": (contract.LAUNCHED_AT, float),
    "port": (contract.PORT, int),
    "max_batch": (contract.MAX_BATCH, int),
    "max_new_tokens": (contract.MAX_NEW_TOKENS, int),
    "served_model_name": (contract.SERVED_MODEL_NAME, str),
    "metrics_port": (contract.METRICS_PORT, int),
    "progress_interval": (contract.PROGRESS_INTERVAL, float),
    "log_level": (contract.LOG_LEVEL, str),
    "job_name": (contract.JOB_NAME, str),
}
_FLAG_ONLY: dict[str, Callable[[str], Any]] = {"max_grad_norm": float, "threads": int, "host": str}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors become one-line UserErrors too
        raise UserError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m llama_runtime",
        description="Llama training and inference for llama-operator workers. Flags override LLAMAOP_*.",
    )
    parser.add_argument(
        "command", nargs="?", choices=("train", "serve"), help=f"default: from {contract.MODE}"
    )
    for f in fields(RunConfig):
        if f.name == "command":
            continue
        env = _ENV.get(f.name, ("", None))[0]
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=f.name.upper(),
            default=None,
            help=f"(env {env})" if env else None,
        )
    return parser


def parse(argv: Sequence[str], env: Mapping[str, str] | None = None) -> RunConfig:
    env = os.environ if env is None else env
    args = vars(_parser().parse_args(list(argv)))
    command = args.pop("command") or {"train": "train", "inference": "serve"}.get(env.get(contract.MODE, ""))
    if command is None:
        raise UserError(f"give a command (train or serve) or set {contract.MODE} to train or inference")
    values: dict[str, Any] = {"command": command}
    for name, raw in args.items():
        source, convert = None, None
        if raw is not None:
            source = f"--{name.replace('_', '-')}"
            convert = _ENV[name][1] if name in _ENV else _FLAG_ONLY[name]
        elif name in _ENV and env.get(_ENV[name][0], "") != "":
            source, convert = _ENV[name][0], _ENV[name][1]
            raw = env[_ENV[name][0]]
        if source is None or convert is None:
            continue
        try:
            values[name] = convert(raw)
        except ValueError:
            raise UserError(f"{source}={raw!r} is not a valid {name.replace('_', ' ')}") from None
    config = RunConfig(**values)
    validate(config)
    return config


def validate(c: RunConfig) -> None:
    if c.backend not in BACKENDS:
        raise UserError(f"unknown backend {c.backend!r}; choose one of {', '.join(BACKENDS)}")
    if c.precision is not None and c.precision not in PRECISIONS:
        raise UserError(f"unknown precision {c.precision!r}; choose bf16 or fp32")
    if c.model_dir is not None:
        if not (c.model_dir / "config.json").is_file():
            raise UserError(f"model directory {c.model_dir} has no config.json")
    else:
        model_kwargs(c.model)  # raises on an unknown preset or bad dimensions
    positive = {"steps": c.steps, "seq_len": c.seq_len, "batch_size": c.batch_size, "max_batch": c.max_batch}
    positive |= {"max_new_tokens": c.max_new_tokens, "checkpoint_keep": c.checkpoint_keep}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{name.replace('_', ' ')} must be positive, got {value}")
    if c.measure_after < 0:
        raise UserError(f"measure after must be >= 0 steps, got {c.measure_after}")
    if c.micro_batch < 0 or c.checkpoint_every < 0 or c.learning_rate <= 0:
        raise UserError("micro batch and checkpoint interval must be >= 0 and the learning rate > 0")
    if c.command == "train":
        if c.data_dir is not None and not c.data_dir.is_dir():
            raise UserError(f"data directory {c.data_dir} does not exist")
        if c.checkpoint_every and c.checkpoint_dir is None:
            raise UserError(f"checkpoints every {c.checkpoint_every} steps need a checkpoint directory")
    if c.checkpoint_dir is not None and c.checkpoint_dir.exists() and not c.checkpoint_dir.is_dir():
        raise UserError(f"checkpoint directory {c.checkpoint_dir} is not a directory")
