"""A bad configuration ends the run with a non-zero exit and one clear line, not a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import BASE_ARGS, cli, run, runtime_env

pytestmark = pytest.mark.runtime


def _one_line_error(proc: Any) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llama_runtime: error: ")
    return str(lines[0])


def test_unknown_preset() -> None:
    line = _one_line_error(run(cli("train", *BASE_ARGS), env=runtime_env(LLAMAOP_MODEL="llama3-9000b")))
    assert "unknown model preset 'llama3-9000b'" in line and "llama3-70b" in line


def test_missing_data_directory(tmp_path: Path) -> None:
    line = _one_line_error(run(cli("train", *BASE_ARGS, "--data-dir", str(tmp_path / "nope"))))
    assert f"data directory {tmp_path / 'nope'} does not exist" in line


def test_empty_data_directory_and_bad_numbers(tmp_path: Path) -> None:
    env = runtime_env(LLAMAOP_DATA_DIR=str(tmp_path), LLAMAOP_STEPS="ten")
    assert "LLAMAOP_STEPS='ten' is not a valid steps" in _one_line_error(
        run(cli("train", *BASE_ARGS), env=env)
    )
    env = runtime_env(LLAMAOP_MODEL='{"hidden_size": 64, "num_hidden_layers": 2}')
    assert "lacks ['intermediate_size', 'num_attention_heads']" in _one_line_error(run(cli("train"), env=env))


def test_corrupt_checkpoint(tmp_path: Path, trained: dict[str, Any]) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["checkpoint_dir"], ckpt)
    (latest,) = ckpt.glob("step-*")
    model_file = latest / "model-rank00000.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-100:] = bytes(100)  # same size, different bytes: only the checksum can tell
    model_file.write_bytes(bytes(data))
    line = _one_line_error(
        run(cli("train", *trained["args"], "--steps", "60", "--checkpoint-dir", str(ckpt)))
    )
    assert f"checkpoint {latest} is corrupt: model-rank00000.safetensors fails its sha256 check" in line

    from llama_runtime.checkpoint import Checkpoint
    from llama_runtime.errors import UserError

    model_file.write_bytes(bytes(data[:1000]))  # a truncated file is caught before anything is read
    with pytest.raises(UserError, match=r"model-rank00000\.safetensors has 1000 bytes, expected"):
        Checkpoint(latest)
    (latest / "state.json").write_text("{")
    with pytest.raises(UserError, match=r"state\.json"):
        Checkpoint(latest)
