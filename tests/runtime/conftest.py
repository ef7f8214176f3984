"""Training in this process (torch imports once per session) and a tiny model trained once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import BASE_ARGS

TRAINED_ARGS = [
    *BASE_ARGS,
    "--steps",
    "50",
    "--batch-size",
    "8",
    "--learning-rate",
    "3e-3",
    "--warmup-steps",
    "5",
]


def train_here(args: list[str]) -> dict[str, Any]:
    """`llama_runtime train ARGS` as one process of a world of one, in this process."""
    import torch

    from llama_runtime.backends import select_backend
    from llama_runtime.config import parse
    from llama_runtime.log import make_logger
    from llama_runtime.progress import ProgressReporter
    from llama_runtime.train import Trainer

    cfg = parse(["train", *args], env={})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log = make_logger("warning")
        trainer = Trainer(cfg, select_backend(cfg.backend), log)
        start = trainer.state
        result = trainer.run(None, ProgressReporter(None, 10, log))
    finally:
        torch.set_num_threads(threads)
    return {**result, "start": start, "trainer": trainer}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """50 steps of the tiny preset on the shipped corpus: its losses and checkpoint directory."""
    ckpt = tmp_path_factory.mktemp("trained")
    result = train_here([*TRAINED_ARGS, "--checkpoint-dir", str(ckpt)])
    return {"losses": result["losses"], "checkpoint_dir": Path(ckpt), "args": TRAINED_ARGS}
