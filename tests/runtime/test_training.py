"""Training: the loss falls, ranks agree with one process, a killed run resumes where it stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import train_here
from tests.runtime.helpers import BASE_ARGS, ROOT, cli, events, losses, run, runtime_env

pytestmark = pytest.mark.runtime


def test_loss_falls_over_50_steps(trained: dict[str, Any]) -> None:
    got = trained["losses"]
    assert len(got) == 50
    first, last = sum(got[:5]) / 5, sum(got[-5:]) / 5
    # Uniform guessing over 512 ids is ln(512) = 6.2; the templated corpus is far more predictable.
    assert first > 5.0
    assert last < 0.6 * first, f"loss went from {first:.3f} to only {last:.3f}"


def test_two_ranks_match_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    common = [*BASE_ARGS, "--steps", "4", "--batch-size", "8", "--learning-rate", "1e-3"]
    common += ["--checkpoint-every", "4"]
    # The ranks also recompute activations (checkpointing): that must not change a single number.
    sharded = [*common, "--micro-batch", "2", "--activation-checkpointing", "1"]
    two = run(cli("train", *sharded, "--checkpoint-dir", str(tmp_path / "two"), torchrun=2))
    assert two.returncode == 0, two.stderr[-3000:]
    # One process, the same 8 sequences per step as 2 forwards of 4 (gradient accumulation).
    one = train_here([*common, "--micro-batch", "4", "--checkpoint-dir", str(tmp_path / "one")])
    assert one["trainer"].plan.accumulation == 2

    start = events(two.stdout, "training")[0]
    assert (start["world"], start["micro_batch"], start["accumulation"]) == (2, 2, 2)
    assert start["activation_checkpointing"] is True
    l2 = losses(two.stdout)
    assert sorted(l2) == [1, 2, 3, 4]
    for step, loss in enumerate(one["losses"], 1):
        assert l2[step] == pytest.approx(loss, abs=2e-4), step
    assert l2[4] < l2[1]

    # FSDP2 really shards weights, gradients and both AdamW moments, as the cpu row and the planner say.
    from llama_operator.api import ModelSpec
    from llama_operator.planning import llama
    from llama_runtime.capabilities import CAPABILITIES

    row = CAPABILITIES["cpu"].training
    assert row is not None
    planned = llama.training_memory(
        llama.shape_of(ModelSpec(preset="tiny")), row, micro_batch=2, sequence_length=64,
        precision="fp32", activation_checkpointing=True,
    )  # fmt: skip
    memory = events(two.stdout, "memory")[0]
    assert (memory["state_bytes"], memory["layout"]) == (planned.sharded / 2, "S(0)")

    # Both ranks wrote their shard of the same step; the weights equal the single process's.
    state = json.loads((tmp_path / "two" / "step-000000004" / "state.json").read_text())
    assert state["world"] == 2 and state["data_position"] == 32
    assert {"model-rank00000.safetensors", "model-rank00001.safetensors"} <= set(state["files"])
    import torch

    from llama_runtime.checkpoint import Checkpoint

    sharded_ckpt = Checkpoint(tmp_path / "two" / "step-000000004")
    single_ckpt = Checkpoint(tmp_path / "one" / "step-000000004")
    with sharded_ckpt.reader("model") as a, single_ckpt.reader("model") as b:
        for name, shape in state["shapes"].items():
            rows = shape[0]
            torch.testing.assert_close(a.read(name, 0, rows), b.read(name, 0, rows), atol=1e-5, rtol=1e-4)


def _kill_after_first_checkpoint(args: list[str], ckpt_dir: Path) -> int:
    """Starts training, SIGKILLs it as soon as a checkpoint is logged; returns the step it saved."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=runtime_env(), cwd=ROOT
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    saved = -1
    try:
        for line in proc.stdout:
            saved_events = events(line, "checkpoint saved")
            if saved_events:
                saved = saved_events[0]["step"]
                proc.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
    finally:
        proc.kill()
        proc.wait()
    assert saved > 0, "the run ended without a checkpoint"
    return saved


def test_killed_run_resumes_at_the_saved_step_and_data_position(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    ckpt = tmp_path / "ckpt"
    # The same configuration as the session's uninterrupted 50-step run, so its losses are the reference.
    args = cli("train", *trained["args"], "--checkpoint-dir", str(ckpt), "--checkpoint-every", "3")
    saved = _kill_after_first_checkpoint(args, ckpt)
    assert saved == 3

    resumed = train_here([*trained["args"], "--checkpoint-dir", str(ckpt), "--checkpoint-every", "3"])
    start = resumed["start"]
    assert start.step >= saved and start.data_position == start.step * 8
    assert len(resumed["losses"]) == 50 - start.step
    # Same weights, optimizer state and data as the uninterrupted run: the same losses, step by step.
    assert resumed["losses"] == pytest.approx(trained["losses"][start.step :], abs=1e-5)
