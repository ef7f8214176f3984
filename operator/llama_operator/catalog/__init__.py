"""Accelerators, instance types and default prices: the built-in `catalog.yaml`, overridable by a file."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llama_operator.catalog.model import Accelerator, Catalog, Defaults, InstanceType, Profile

__all__ = ["Accelerator", "Catalog", "Defaults", "InstanceType", "Profile", "builtin", "load", "merge"]


def merge(base: Any, override: Any) -> Any:
    """Deep merge of mappings (override wins); lists and scalars are replaced whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: merge(base[k], v) if k in base else v for k, v in {**base, **override}.items()}
    return override


@cache
def _builtin_raw() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("catalog.yaml").read_text()
    return yaml.safe_load(text)


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
    return Catalog.model_validate(merge(_builtin_raw(), override))
