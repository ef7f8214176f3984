"""`llamaop report`: the rows (estimate before the probe, measurement, chosen pool, the real run), the JSON,
the table, and the chart checked as an image."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from matplotlib import colors
from matplotlib import image as mpimg

from llama_operator import cli
from llama_operator.lifecycle.status import dump
from llama_operator.report import build
from llama_operator.report.chart import CHOSEN_BAND, ESTIMATED, MEASURED, render
from tests.unit.test_probes import cluster, measure, run


def probed_object() -> dict[str, Any]:
    """A job probed on cpu, trn1 and p5 and placed by measured cost (on trn1), as the API server has it."""
    world = cluster()
    world.step()
    for pool, rate in (("cpu", 5000.0), ("trn1", 1_000_000.0), ("p5", 2_000_000.0)):
        run(world, pool)
        measure(world, pool, rate, startup=30.0, compiled=30.0)
    world.step(timedelta(minutes=2))
    world.step()
    view = world.jobs["ml/j"]
    return {"apiVersion": "llamaop.io/v1alpha1", "kind": "LlamaJob",
            "metadata": {"name": view.name, "namespace": view.namespace},
            "spec": dict(view.raw_spec), "status": dump(view.status)}  # fmt: skip


def test_rows_show_the_estimate_made_before_the_probe_against_what_it_measured() -> None:
    rep = build(probed_object())
    rows = {r.pool: r for r in rep.rows}
    assert rep.chosen == "trn1" and [r.pool for r in rep.rows if r.chosen] == ["trn1"]
    cpu = rows["cpu"]
    # The estimate said cpu was cheapest; the probe measured it slow.
    assert cpu.est_cost_per_million is not None and cpu.measured_cost_per_million is not None
    assert cpu.est_cost_per_million < rows["trn1"].est_cost_per_million  # type: ignore[operator]
    assert cpu.measured_cost_per_million > rows["trn1"].measured_cost_per_million  # type: ignore[operator]
    assert cpu.measured_tokens_per_second == 5000.0 and cpu.est_tokens_per_second != 5000.0
    assert rows["trn1"].startup_seconds == 30.0 and rows["trn1"].compile_seconds == 30.0
    assert rep.probes_cost == pytest.approx(sum(r.probe_cost or 0 for r in rep.rows))
    assert rep.actual is None  # placed, not run yet


def test_a_finished_job_reports_what_it_really_cost_and_took_against_its_estimate() -> None:
    obj = probed_object()
    st = obj["status"]
    start = "2026-11-28T13:00:00Z"
    st.update(phase="Succeeded", startTime=start, completionTime="2026-11-28T13:30:00Z",
              accruedCost=round(st["accruedCost"] + 0.75, 4),
              progress={"step": 200, "totalSteps": 200, "tokensPerSecond": 900_000.0})  # fmt: skip
    rep = build(obj)
    assert rep.actual is not None
    assert rep.actual.pool == "trn1" and rep.actual.hours == pytest.approx(0.5)
    assert rep.actual.cost == pytest.approx(0.75, abs=1e-3)  # the probes' cost is not the run's
    assert rep.actual.cost_per_million == pytest.approx(0.75 / rep.tokens * 1e6, rel=1e-2)
    assert rep.actual.est_cost == st["estimatedCost"]


def test_cli_report_from_a_file_prints_json_and_writes_the_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(probed_object()))
    chart = tmp_path / "out" / "chart.png"
    assert cli.main(["report", "-f", str(path), "--json", "--chart", str(chart)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] == "trn1" and out["chart"] == str(chart) and chart.is_file()
    assert {r["pool"] for r in out["rows"]} == {"cpu", "trn1", "p5"}
    assert cli.main(["report", "-f", str(path), "--no-chart"]) == 0
    text = capsys.readouterr().out
    assert "> trn1" in text and "Measured" in text and "by measured cost" in text


def test_cli_report_refuses_a_file_without_the_job(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump({"kind": "AcceleratorPool", "metadata": {"name": "x"}}))
    assert cli.main(["report", "-f", str(path), "--no-chart"]) == cli.EXIT_BAD_INPUT


def _pixels_near(img: np.ndarray, colour: str, tol: float = 0.02) -> int:
    rgb = np.array(colors.to_rgb(colour))
    return int((np.abs(img[:, :, :3] - rgb).max(axis=2) < tol).sum())


def test_the_chart_is_a_real_image_with_both_series_and_the_chosen_pool_marked(tmp_path: Path) -> None:
    path = render(build(probed_object()), tmp_path / "chart.png")
    img = mpimg.imread(path)  # decodes the PNG: floats in [0, 1], RGBA
    height, width = img.shape[:2]
    assert width >= 800 and height >= 250
    rgb = (img[:, :, :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    distinct = len(np.unique(rgb, axis=0))
    assert distinct > 20  # text anti-aliasing, bars, bands: not a blank or single-colour image
    background = (rgb == 255).all(axis=1).mean()
    assert background < 0.9  # a tenth or more of the pixels is drawn
    # Bars of both series and the chosen pool's band are there, in their colours.
    assert _pixels_near(img, ESTIMATED) > 500 and _pixels_near(img, MEASURED) > 500
    assert _pixels_near(img, CHOSEN_BAND) > 500
