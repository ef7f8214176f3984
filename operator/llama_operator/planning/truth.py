"""The simulator's ground truth: real speeds that differ from the calibrated prior.

A truth is a factor per (accelerator, model, mode): real tokens/s over what the speed model estimates.
The calibration's held-out errors run to about 2x either way (`llamaop calibrate`), so generated truths
draw each factor log-uniformly from [1/2, 2]. The engine never sees the truth; the simulator runs jobs for
their true time and charges their true cost, and its oracle plans with the truth.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llama_operator.api.types import Mode

SPREAD = 2.0
"""Generated factors lie in [1/SPREAD, SPREAD]."""

Key = tuple[str, str, Mode]
"""(accelerator, model label, mode)."""


@dataclass(frozen=True, slots=True)
class Truth:
    name: str
    factors: Mapping[Key, float] = field(default_factory=dict)
    """Missing keys run exactly at the prior."""

    def factor(self, accelerator: str, model: str, mode: Mode) -> float:
        return self.factors.get((accelerator, model, mode), 1.0)


def generate(
    accelerators: Iterable[str], models: Iterable[str], *, seed: int, spread: float = SPREAD
) -> Truth:
    """A factor in [1/spread, spread], log-uniform, for every accelerator, model and mode."""
    rng = random.Random(seed)
    factors: dict[Key, float] = {}
    for accelerator in sorted(accelerators):
        for model in sorted(models):
            for mode in ("train", "inference"):
                factors[(accelerator, model, mode)] = round(
                    math.exp(rng.uniform(-1, 1) * math.log(spread)), 4
                )
    return Truth(f"seed{seed}", factors)


def dump(truth: Truth) -> str:
    rows = [
        {"accelerator": a, "model": m, "mode": mode, "factor": f} for (a, m, mode), f in truth.factors.items()
    ]
    return yaml.safe_dump({"name": truth.name, "factors": rows}, sort_keys=False, width=120)


def parse(doc: Mapping[str, Any]) -> Truth:
    factors: dict[Key, float] = {}
    for row in doc.get("factors", []):
        if row["mode"] not in ("train", "inference"):
            raise ValueError(f"truth: mode must be train or inference, not {row['mode']!r}")
        factor = float(row["factor"])
        if factor <= 0:
            raise ValueError(f"truth: factor must be positive ({row})")
        factors[(str(row["accelerator"]), str(row["model"]), row["mode"])] = factor
    return Truth(str(doc.get("name", "truth")), factors)


def load(path: Path | str) -> Truth:
    return parse(yaml.safe_load(Path(path).read_text()) or {})
