"""The LLAMAOP_* contract: every variable is read, flags override it, and the data windows are pure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llama_runtime import contract
from llama_runtime.config import _ENV, parse
from llama_runtime.dataset import TokenWindows
from llama_runtime.launch import READS as LAUNCH_READS

pytestmark = pytest.mark.runtime


def test_environment_then_flags(tmp_path: Path) -> None:
    env = {
        contract.MODEL: "llama3-1b",
        contract.BACKEND: "cpu",
        contract.STEPS: "500",
        contract.BATCH_SIZE: "64",
        contract.MICRO_BATCH: "4",
        contract.CHECKPOINT_DIR: str(tmp_path),
        contract.CHECKPOINT_EVERY: "50",
        contract.ACTIVATION_CHECKPOINTING: "1",
        contract.PROGRESS_INTERVAL: "2.5",
    }
    cfg = parse(["train", "--steps", "7"], env)
    assert (cfg.model, cfg.backend, cfg.steps, cfg.batch_size, cfg.micro_batch) == (
        "llama3-1b",
        "cpu",
        7,
        64,
        4,
    )
    assert cfg.checkpoint_dir == tmp_path and cfg.checkpoint_every == 50 and cfg.activation_checkpointing
    assert cfg.progress_interval == 2.5 and cfg.precision is None and cfg.port == contract.DEFAULT_PORT


def test_every_contract_variable_is_read_and_documented() -> None:
    read = {variable for variable, _ in _ENV.values()}
    # Identity and Neuron's cache are set for the pod, not read as options: the rest must all be read.
    not_options = {
        contract.JOB_NAMESPACE,
        contract.JOB_UID,
        contract.POD_NAME,
        contract.POD_NAMESPACE,
        contract.ATTEMPT,
        contract.MODE,
    }
    # Where the pod runs (engine, accelerator, devices) is read by the launcher, before config exists.
    assert set(contract.ALL) - not_options == read | LAUNCH_READS
    assert not read & LAUNCH_READS


def test_windows_do_not_depend_on_how_the_batch_is_split() -> None:
    tokens = np.arange(10_000, dtype=np.int32)
    a, b = TokenWindows(tokens, 32, seed=3), TokenWindows(tokens, 32, seed=3)
    whole = a.batch(100, 16)
    parts = np.concatenate([b.batch(100 + 4 * k, 4) for k in range(4)])
    assert np.array_equal(whole, parts)
    assert whole.shape == (16, 33) and np.array_equal(whole[:, 1:], whole[:, :-1] + 1)  # contiguous windows
    assert not np.array_equal(a.batch(0, 16), TokenWindows(tokens, 32, seed=4).batch(0, 16))
    # Past the end of the corpus the windows repeat in a new order.
    n = a.windows
    assert sorted(a.batch(0, n)[:, 0].tolist()) == sorted(a.batch(n, n)[:, 0].tolist())


@pytest.mark.parametrize("use_structlog", [True, False])
def test_log_lines_are_json_with_or_without_structlog(
    use_structlog: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from llama_runtime.log import make_logger

    log = make_logger("info", use_structlog=use_structlog, rank=0)
    log.debug("hidden")
    log.info("progress", step=3, loss=1.5)
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert {k: doc[k] for k in ("event", "level", "rank", "step", "loss")} == {
        "event": "progress",
        "level": "info",
        "rank": 0,
        "step": 3,
        "loss": 1.5,
    }
    assert doc["timestamp"].endswith("Z")
