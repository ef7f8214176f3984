"""The XLA (torch-neuronx) path on PJRT_DEVICE=CPU, in its own environment (torch-xla 2.9 pins torch 2.9):
a checkpoint written by the cpu backend resumes on xla with the same losses, and xla's loads on cpu.

Build the environment with hack/xla/setup.sh; the test is skipped where it does not exist.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import train_here
from tests.runtime.helpers import cli, events, losses, run, runtime_env

pytestmark = pytest.mark.runtime

XLA_PYTHON = Path(
    os.environ.get("LLAMAOP_XLA_PYTHON", Path.home() / ".cache/llama-operator/xla-venv/bin/python")
)


@pytest.mark.skipif(
    not XLA_PYTHON.exists(), reason=f"no torch-xla environment at {XLA_PYTHON} (hack/xla/setup.sh)"
)
def test_checkpoint_moves_between_cpu_and_xla(tmp_path: Path, trained: dict[str, Any]) -> None:
    on_xla, on_cpu = tmp_path / "xla", tmp_path / "cpu"
    shutil.copytree(trained["checkpoint_dir"], on_xla)
    shutil.copytree(trained["checkpoint_dir"], on_cpu)
    args = [*trained["args"], "--steps", "53"]

    proc = run(
        cli(
            "train",
            *args,
            "--backend",
            "xla",
            "--precision",
            "fp32",
            "--checkpoint-dir",
            str(on_xla),
            python=str(XLA_PYTHON),
        ),
        env=runtime_env(PJRT_DEVICE="CPU"),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = events(proc.stdout, "training")[0]
    assert (start["backend"], start["device"]) == ("xla", "xla:0")
    assert events(proc.stdout, "resumed")[0]["step"] == 50
    xla_losses = losses(proc.stdout)

    cpu = train_here([*args, "--checkpoint-dir", str(on_cpu)])
    assert cpu["start"].step == 50
    assert [xla_losses[s] for s in (51, 52, 53)] == pytest.approx(cpu["losses"], abs=1e-3)

    # And back: the checkpoint xla wrote (one replicated writer) resumes on cpu.
    back = train_here([*args, "--steps", "54", "--checkpoint-dir", str(on_xla)])
    assert back["start"].step == 53 and back["start"].data_position == 53 * 8
    assert len(back["losses"]) == 1 and back["losses"][0] < trained["losses"][0]


@pytest.mark.skipif(
    not XLA_PYTHON.exists(), reason=f"no torch-xla environment at {XLA_PYTHON} (hack/xla/setup.sh)"
)
def test_xla_refuses_a_world_its_runtime_cannot_see() -> None:
    # PJRT's CPU client makes each torchrun process a world of one; training would silently diverge.
    proc = run(
        cli(
            "train",
            "--backend",
            "xla",
            "--steps",
            "1",
            "--metrics-port",
            "0",
            python=str(XLA_PYTHON),
            torchrun=2,
        ),
        env=runtime_env(PJRT_DEVICE="CPU"),
        timeout=300,
    )
    assert proc.returncode != 0
    assert (
        "llama_runtime: error: torchrun started 2 processes but the XLA runtime sees a world of 1"
        in proc.stderr
    )
