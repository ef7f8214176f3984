"""`llamaop plan`, `simulate`, `trace` and the lazy `run`."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_operator import catalog, cli

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NOW = "2026-06-01T00:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_prints_the_candidate_table_and_the_choice(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLES / "finetune-llama3-8b.yaml"), "--now", NOW)
    assert code == 0
    assert "default/finetune-llama3-8b: candidates" in out
    assert "Chosen" in out and "PLACED" in out
    for column in ("pool", "accelerator", "tokens/s", "$/h", "est. cost", "$/M tok", "verdict"):
        assert column in out
    assert "p5-48xlarge" in out  # the built-in catalog's pools when none are given


def test_plan_json_with_pools(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        str(EXAMPLES / "tiny-cpu.yaml"),
        "--pools",
        str(EXAMPLES / "pools"),
        "--now",
        NOW,
        "--json",
    )
    assert code == 0
    (decision,) = json.loads(out)
    assert decision["key"] == "default/tiny-cpu" and decision["outcome"] == "placed"
    assert decision["pool"] == "cpu-m7i-od" and decision["phase"] == "Placed"
    assert {c["pool"] for c in decision["candidates"]} >= {"cpu-m7i-od", "p5-48xl-spot"}


def test_plan_reads_free_devices_from_pool_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text(
        "kind: AcceleratorPool\nmetadata: {name: cpu}\n"
        "spec: {nodeSelector: {llamaop.io/pool: cpu}, instanceType: m7i.8xlarge}\n"
        "status: {readyNodes: 1, freeDevices: 0}\n"
    )
    code, out, _ = run(capsys, "plan", str(EXAMPLES / "tiny-cpu.yaml"), "--pools", str(pools), "--json")
    assert code == 0 and json.loads(out)[0]["outcome"] == "queued"


def test_plan_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rejected = tmp_path / "rejected.yaml"
    rejected.write_text(
        "kind: LlamaJob\nmetadata: {name: r}\n"
        "spec: {mode: train, model: {preset: tiny}, training: {steps: 10},"
        " placement: {maxPricePerHour: 0.001}}\n"
    )
    code, out, _ = run(capsys, "plan", str(rejected))
    assert code == cli.EXIT_REJECTED and "REJECTED" in out and "ExceedsMaxPrice" in out

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("kind: LlamaJob\nmetadata: {name: bad}\nspec: {mode: train, model: {preset: nope}}\n")
    code, _, err = run(capsys, "plan", str(invalid))
    assert code == cli.EXIT_BAD_INPUT and "bad" in err and "preset" in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert run(capsys, "plan", str(broken))[0] == cli.EXIT_BAD_INPUT
    assert run(capsys, "plan", str(tmp_path / "missing.yaml"))[0] == cli.EXIT_BAD_INPUT


def test_trace_then_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trace.yaml"
    assert run(capsys, "trace", "--seed", "1", "--jobs", "12", "--days", "0.5", "--out", str(path))[0] == 0
    code, out, _ = run(capsys, "simulate", str(path), "--truth-seed", "4", "--json")
    assert code == 0
    report = json.loads(out)
    labels = [r["label"] for r in report["results"]]
    assert labels[:2] == ["engine", "engine + learning"] and labels[-1] == "oracle (knows the truth)"
    assert report["truth"] == "seed4" and report["results"][-1]["regret"] == 1.0
    truth_file = tmp_path / "truth.yaml"
    truth_file.write_text(
        "name: slow-gpus\nfactors:\n- {accelerator: h100, model: tiny, mode: train, factor: 0.5}\n"
    )
    code, out, _ = run(
        capsys, "simulate", str(path), "--pools", str(EXAMPLES / "pools"), "--truth", str(truth_file)
    )
    assert code == 0 and "truth slow-gpus" in out and "oracle" in out and "regret" in out


def test_calibrate_reports_every_measurement_and_writes_the_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "calibrate", "--json")
    assert code == 0
    report = json.loads(out)
    measurements = catalog.builtin().measurements
    assert measurements is not None
    assert [r["id"] for r in report["rows"]] == [m.id for m in measurements.measurements]
    assert report["summary"]["medianAbsErrorHeldOut"] <= 0.25 and report["summary"]["inversions"] == []
    written = tmp_path / "calibration.yaml"
    assert run(capsys, "calibrate", "--write", str(written))[0] == 0
    assert (
        catalog.Calibration.model_validate(yaml.safe_load(written.read_text()))
        == catalog.builtin().calibration
    )


def test_run_is_delegated_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    fake = types.ModuleType("llama_operator.controller.main")

    def add_arguments(parser: Any) -> None:
        parser.add_argument("--namespace", action="append", default=[])
        parser.add_argument("--metrics-port", type=int, default=8080)

    def run_(args: Any) -> int:
        seen["args"] = args
        return 7

    fake.add_arguments = add_arguments  # type: ignore[attr-defined]
    fake.run = run_  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_operator.controller.main", fake)
    import llama_operator.controller as controller_package

    monkeypatch.setattr(controller_package, "main", fake, raising=False)
    assert cli.main(["run", "--namespace", "a", "--metrics-port", "0"]) == 7
    assert seen["args"].namespace == ["a"] and seen["args"].metrics_port == 0


def test_help_lists_the_run_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    out = capsys.readouterr().out
    for option in ("--namespace", "--all-namespaces", "--metrics-port", "--peering", "--standalone"):
        assert option in out


def test_run_options_reach_the_reconcile_settings() -> None:
    import argparse
    from datetime import timedelta

    from llama_operator.controller.main import add_arguments, build_options

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--pool-cooldown", "90", "--cost-refresh", "120", "--cost-writes-per-second", "2"]
    )
    options = build_options(args)
    assert options.settings.pool_cooldown == timedelta(seconds=90)
    assert options.cost_every == timedelta(seconds=120)
    assert options.cost_interval(1000) == timedelta(seconds=500)  # 1,000 jobs at 2 refreshes/s
    assert options.cost_interval(10) == timedelta(seconds=120)
