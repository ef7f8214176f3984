"""Constrained field types. Strings and lists are bounded: the API server estimates CEL cost from bounds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema

# Go-style durations ("90s", "5m", "1h30m") or a number of seconds.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: int | str) -> float:
    """Seconds in a duration field's value (an int is seconds)."""
    if isinstance(value, int):
        return float(value)
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration such as 90s, 5m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def _positive_duration(value: int | str) -> int | str:
    if duration_seconds(value) <= 0:
        raise ValueError("duration must be positive")
    return value


# int-or-string in the CRD: `pattern` and `minimum` each apply only to their own type there.
Duration = Annotated[
    int | str,
    AfterValidator(_positive_duration),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": DURATION_PATTERN,
            "minimum": 1,
            "maxLength": 32,
        }
    ),
]

# DNS-1123 subdomain: names of pools and other Kubernetes objects.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Name = Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)]

# Where data, weights and checkpoints live: empty, pvc://claim/sub/path, an absolute path, or s3://...
URI_PATTERN = r"^$|^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\s]*)?$|^/[^\s]*$|^[a-z][a-z0-9+.-]*://[^\s]+$"
Uri = Annotated[str, Field(max_length=1024, pattern=URI_PATTERN)]

# Short identifiers such as accelerator models (h100, trainium2) and instance types (p5.48xlarge).
IDENT_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Ident = Annotated[str, Field(min_length=1, max_length=63, pattern=IDENT_PATTERN)]


def unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError(f"items must be unique: {values}")
    return values


# The CRD says set (uniqueItems is not allowed in CRDs); pydantic checks the same.
SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}
