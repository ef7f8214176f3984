"""The XLA (torch-neuronx) line on PJRT_DEVICE=CPU with 4 virtual devices, in its own environment (torch-xla
2.9 pins torch 2.9; `make test` builds it with hack/xla/setup.sh): SPMD FSDPv2 shards the state over the
devices as the capability row and the planner say; a checkpoint written by the cpu backend resumes on
xla with the same losses, and xla's loads on cpu.

Outside `make test` the tests skip when the environment is missing, unless LLAMAOP_REQUIRE_XLA=1 (what
`make test` sets), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import train_here
from tests.runtime.helpers import BASE_ARGS, cli, events, losses, run, runtime_env

pytestmark = pytest.mark.runtime

XLA_PYTHON = Path(
    os.environ.get("LLAMAOP_XLA_PYTHON", Path.home() / ".cache/llama-operator/xla-venv/bin/python")
)
DEVICES = 4
XLA_ENV = {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(DEVICES)}


@pytest.fixture
def xla_python() -> str:
    """The XLA environment's interpreter; a missing one skips, or fails under LLAMAOP_REQUIRE_XLA=1."""
    if not XLA_PYTHON.exists():
        why = f"no torch-xla environment at {XLA_PYTHON} (hack/xla/setup.sh)"
        if os.environ.get("LLAMAOP_REQUIRE_XLA") == "1":
            pytest.fail(f"LLAMAOP_REQUIRE_XLA=1: {why}")
        pytest.skip(why)
    return str(XLA_PYTHON)


def test_checkpoint_moves_between_cpu_and_xla_and_xla_shards_as_planned(
    tmp_path: Path, trained: dict[str, Any], xla_python: str
) -> None:
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
            python=xla_python,
        ),
        env=runtime_env(**XLA_ENV),
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = events(proc.stdout, "training")[0]
    assert (start["backend"], start["device"]) == ("xla", "xla:0")
    # The 8 sequences of a step are split over the mesh: 2 per device, one forward.
    assert (start["micro_batch"], start["accumulation"]) == (8 // DEVICES, 1)
    assert events(proc.stdout, "resumed")[0]["step"] == 50
    xla_losses = losses(proc.stdout)

    # Every parameter, gradient and AdamW moment is split over the 4 devices, exactly as the capability
    # row and the planner's memory model count it (the embedding's rows: {devices=[4,1]0,1,2,3}).
    from llama_operator.api import ModelSpec
    from llama_operator.planning import llama
    from llama_runtime.capabilities import CAPABILITIES

    memory = events(proc.stdout, "memory")[0]
    assert memory["layout"] == "{devices=[4,1]0,1,2,3}"
    row = CAPABILITIES["neuron-xla"].training
    assert row is not None
    planned = llama.training_memory(
        llama.shape_of(ModelSpec(preset="tiny")),
        row,
        micro_batch=2,
        sequence_length=64,
        precision="fp32",
        activation_checkpointing=False,
    )
    assert memory["state_bytes"] == planned.sharded / DEVICES

    cpu = train_here([*args, "--checkpoint-dir", str(on_cpu)])
    assert cpu["start"].step == 50
    assert [xla_losses[s] for s in (51, 52, 53)] == pytest.approx(cpu["losses"], abs=1e-3)

    # And back: the checkpoint xla wrote (one writer, whole tensors gathered from the mesh) resumes on cpu.
    back = train_here([*args, "--steps", "54", "--checkpoint-dir", str(on_xla)])
    assert back["start"].step == 53 and back["start"].data_position == 53 * 8
    assert len(back["losses"]) == 1 and back["losses"][0] < trained["losses"][0]
    assert back["losses"][0] == pytest.approx(
        train_here([*args, "--steps", "54", "--checkpoint-dir", str(on_cpu)])["losses"][0], abs=1e-3
    )


def test_xla_refuses_more_than_one_process(xla_python: str) -> None:
    # The XLA line runs one SPMD process per pod (capabilities: per-pod, max_nodes 1); a launcher that
    # started one per NeuronCore would train diverging replicas, so the backend stops at once.
    proc = run(
        cli(
            "train",
            "--backend",
            "xla",
            "--steps",
            "1",
            "--metrics-port",
            "0",
            python=xla_python,
            torchrun=2,
        ),
        env=runtime_env(**XLA_ENV),
        timeout=300,
    )
    assert proc.returncode != 0
    assert (
        "llama_runtime: error: torchrun started 2 processes but the XLA line trains in one process per "
        f"job, SPMD over the {DEVICES} devices it sees" in proc.stderr
    )


def test_xla_recomputes_activations_with_the_same_losses(xla_python: str) -> None:
    # The planner turns checkpointing on for llama3-8b on trn1; torch.utils.checkpoint cannot run on XLA
    # tensors, so the backend recomputes with torch_xla's variant: the losses must not change.
    args = [*BASE_ARGS, "--steps", "2", "--batch-size", "8", "--precision", "fp32"]
    proc = run(
        cli("train", *args, "--backend", "xla", "--activation-checkpointing", "1", python=xla_python),
        env=runtime_env(**XLA_ENV),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert events(proc.stdout, "training")[0]["activation_checkpointing"] is True
    cpu = train_here(args)
    assert list(losses(proc.stdout).values()) == pytest.approx(cpu["losses"], abs=1e-3)
