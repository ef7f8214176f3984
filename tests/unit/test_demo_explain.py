"""hack/explain.py, which `make demo` pipes every job through: a job still probing has no placement
yet, and once broke the demo's "why" column (kubectl's custom-columns failed on placements[-1:])."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "explain.py"

JOBS = {
    "items": [
        {
            "metadata": {"name": "placed"},
            "status": {
                "phase": "Running",
                "message": "1 worker pod(s) running on p5",
                "placements": [{"message": "first try"}, {"message": "placed on p5: cheapest"}],
                "candidates": [{"pool": "p5", "fits": True, "verdict": "Chosen", "tokensPerSecond": 1000}],
            },
        },
        {"metadata": {"name": "probing"}, "status": {"phase": "Queued", "message": "measuring on 2 pool(s)"}},
        {"metadata": {"name": "new"}},
    ]
}


def run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        input=json.dumps(JOBS),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_why_takes_the_latest_placement_else_the_status_message() -> None:
    lines = run("--why").splitlines()
    assert lines[0].split() == ["JOB", "WHY"]
    rows = {line.split()[0]: line.split(None, 1)[1:] for line in lines[1:]}
    assert rows == {"placed": ["placed on p5: cheapest"], "probing": ["measuring on 2 pool(s)"], "new": []}


def test_tables_print_for_jobs_with_and_without_a_status() -> None:
    out = run()
    assert "placed: Running on -" in out and "Chosen" in out and "1,000" in out
    assert "probing: Queued" in out and "new: ?" in out
