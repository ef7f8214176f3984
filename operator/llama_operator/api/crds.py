"""Generates the CRDs of both kinds from the pydantic models: `python -m llama_operator.api.crds --out crds/`.

The pydantic JSON schema is turned into a Kubernetes structural schema: references inlined, optional
unions collapsed, titles and `additionalProperties: false` dropped (the API server prunes instead), JSON
Schema 2020 exclusive bounds rewritten to OpenAPI 3.0 form, and the CEL rules of `rules.py` attached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from llama_operator.api.job import LlamaJob, LlamaJobSpec, LlamaJobStatus
from llama_operator.api.pool import AcceleratorPool, AcceleratorPoolSpec, AcceleratorPoolStatus
from llama_operator.api.types import (
    ACCELERATORPOOL_KIND,
    ACCELERATORPOOL_PLURAL,
    ACCELERATORPOOL_SINGULAR,
    CATEGORY,
    GROUP,
    LLAMAJOB_KIND,
    LLAMAJOB_PLURAL,
    LLAMAJOB_SINGULAR,
    VERSION,
)

HEADER = (
    "# Generated from llama_operator.api by `python -m llama_operator.api.crds --out crds/`. Do not edit.\n"
)

# propertyNames is not part of the structural schema subset the API server accepts.
_DROP = {"title", "additionalProperties", "$defs", "propertyNames"}
# Reading order of a node's keys in the YAML; others keep pydantic's order in between.
_FIRST = ("type", "description", "x-kubernetes-int-or-string", "anyOf", "default", "enum", "format")
_LAST = (
    "properties",
    "additionalProperties",
    "items",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-validations",
)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in _FIRST if k in node]
    keys += [k for k in node if k not in _FIRST and k not in _LAST]
    keys += [k for k in _LAST if k in node]
    return {k: node[k] for k in keys}


def _description(text: str) -> str:
    return " ".join(text.split())


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON schema node as a structural OpenAPI v3.0 schema node."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = structural(defs[ref.rsplit("/", 1)[-1]], defs)
        return _ordered({**target, **{k: v for k, v in structural(node, defs).items() if k != "type"}})
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"unions other than Optional[X] have no structural form: {branches}")
        if node.get("default", ...) is None:
            del node["default"]
        inner = structural(branches[0], defs)
        return _ordered({**inner, **structural(node, defs)})
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "description":
            out[key] = _description(value)
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return _ordered(out)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _kind_schema(kind: type[BaseModel], spec: type[BaseModel], status: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": _description(kind.__doc__ or ""),
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": schema_of(spec),
            "status": schema_of(status),
        },
        "required": ["spec"],
    }


def _column(name: str, path: str, kind: str, description: str, priority: int = 0) -> dict[str, Any]:
    column = {"name": name, "type": kind, "jsonPath": path, "description": description}
    if priority:
        column["priority"] = priority
    return column


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short: str,
    scope: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def llamajob_crd() -> dict[str, Any]:
    return _crd(
        kind=LLAMAJOB_KIND,
        plural=LLAMAJOB_PLURAL,
        singular=LLAMAJOB_SINGULAR,
        short="lj",
        scope="Namespaced",
        schema=_kind_schema(LlamaJob, LlamaJobSpec, LlamaJobStatus),
        columns=[
            _column("Phase", ".status.phase", "string", "Lifecycle phase."),
            _column("Mode", ".spec.mode", "string", "train or inference."),
            _column("Pool", ".status.pool", "string", "AcceleratorPool the job runs on."),
            _column("Accelerator", ".status.accelerator", "string", "Accelerator model."),
            _column("$/h", ".status.pricePerHour", "number", "Price per hour of the devices in use (USD)."),
            _column("Cost", ".status.estimatedCost", "number", "Estimated total cost (USD)."),
            _column("Progress", ".status.progress.percent", "integer", "Percent of training steps done."),
            _column("Spent", ".status.accruedCost", "number", "Cost accrued so far (USD).", priority=1),
            _column("Reason", ".status.reason", "string", "Reason of the latest decision.", priority=1),
            _column("Age", ".metadata.creationTimestamp", "date", "Time since creation."),
        ],
    )


def acceleratorpool_crd() -> dict[str, Any]:
    return _crd(
        kind=ACCELERATORPOOL_KIND,
        plural=ACCELERATORPOOL_PLURAL,
        singular=ACCELERATORPOOL_SINGULAR,
        short="apool",
        scope="Cluster",
        schema=_kind_schema(AcceleratorPool, AcceleratorPoolSpec, AcceleratorPoolStatus),
        columns=[
            _column("Instance", ".spec.instanceType", "string", "Instance type."),
            _column("Accelerator", ".status.accelerator", "string", "Accelerator model."),
            _column("Capacity", ".spec.capacityType", "string", "on-demand, spot or reserved."),
            _column("$/node-h", ".status.pricePerNodeHour", "number", "Effective price per node-hour (USD)."),
            _column("Ready", ".status.readyNodes", "integer", "Ready nodes."),
            _column("Free", ".status.freeDevices", "integer", "Devices free for new workers."),
            _column("Age", ".metadata.creationTimestamp", "date", "Time since creation."),
        ],
    )


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)


def files() -> dict[str, str]:
    """File name -> content of every CRD."""
    return {
        f"{GROUP}_{LLAMAJOB_PLURAL}.yaml": render(llamajob_crd()),
        f"{GROUP}_{ACCELERATORPOOL_PLURAL}.yaml": render(acceleratorpool_crd()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("crds"), help="directory to write the CRDs to")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in files().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    if stale:
        print("stale, run `make crds`: " + " ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
