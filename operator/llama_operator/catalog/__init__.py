"""Accelerators, instance types, default prices, published measurements and the speed calibration fitted to
them: the built-in `catalog.yaml`, `measurements.yaml` and `calibration.yaml`, overridable by a file."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llama_operator.catalog.model import (
    Accelerator,
    AcceleratorSpeeds,
    Calibration,
    Catalog,
    Defaults,
    InferenceSpeed,
    InstanceType,
    Measurement,
    Measurements,
    ModelNumbers,
    SpeedPrecision,
    TrainingSpeed,
)

__all__ = [
    "CALIBRATION_FILE",
    "Accelerator",
    "AcceleratorSpeeds",
    "Calibration",
    "Catalog",
    "Defaults",
    "InferenceSpeed",
    "InstanceType",
    "Measurement",
    "Measurements",
    "ModelNumbers",
    "SpeedPrecision",
    "TrainingSpeed",
    "builtin",
    "load",
    "merge",
]

CALIBRATION_FILE = Path(__file__).with_name("calibration.yaml")


def merge(base: Any, override: Any) -> Any:
    """Deep merge of mappings (override wins); lists and scalars are replaced whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: merge(base[k], v) if k in base else v for k, v in {**base, **override}.items()}
    return override


def _read(name: str) -> Any:
    files = resources.files(__package__)
    path = files.joinpath(name)
    return yaml.safe_load(path.read_text()) if path.is_file() else None


@cache
def _builtin_raw() -> dict[str, Any]:
    raw: dict[str, Any] = _read("catalog.yaml")
    raw["measurements"] = _read("measurements.yaml")
    calibration = _read("calibration.yaml")
    if calibration is not None:
        raw["calibration"] = calibration
    return raw


@cache
def builtin() -> Catalog:
    return Catalog.model_validate(_builtin_raw())


def load(path: Path | str | None = None) -> Catalog:
    """The built-in catalog, with the keys of the YAML file at `path` (if any) merged over it."""
    if path is None:
        return builtin()
    override = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(override, dict):
        raise ValueError(f"{path}: a catalog override is a mapping with defaults/accelerators/instanceTypes")
    raw = merge(_builtin_raw(), override)
    if "calibration" not in override and {"accelerators", "measurements"} & set(override):
        raw.pop("calibration", None)  # the shipped fit no longer matches: the planner refits
    return Catalog.model_validate(raw)
