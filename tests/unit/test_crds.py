"""The generated CRDs: fresh, structural, bounded for CEL, and carrying every rule of rules.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_operator.api import crds, rules
from llama_operator.api.job import PlacementSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load(crds.files()[name])


JOBS = "llamaop.io_llamajobs.yaml"
POOLS = "llamaop.io_acceleratorpools.yaml"


def _schema(name: str) -> dict[str, Any]:
    return _load(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_checked_in_crds_are_current() -> None:
    for name, text in crds.files().items():
        path = ROOT / "crds" / name
        assert path.exists() and path.read_text() == text, f"{path} is stale: run `make crds`"


@pytest.mark.parametrize("name", [JOBS, POOLS])
def test_schema_is_structural(name: str) -> None:
    for path, node in _nodes(_schema(name)):
        assert "$ref" not in node and "$defs" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "title" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node and node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
            assert "anyOf" not in node and "oneOf" not in node, path
        assert "uniqueItems" not in node, path


@pytest.mark.parametrize("name", [JOBS, POOLS])
def test_spec_strings_and_lists_are_bounded_for_cel_cost(name: str) -> None:
    for path, node in _nodes(_schema(name)["properties"]["spec"], ".spec"):
        if node.get("type") == "string" or node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node or "enum" in node or node.get("format") == "date-time", path
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path


@pytest.mark.parametrize("name", [JOBS, POOLS])
def test_every_field_is_described(name: str) -> None:
    for path, node in _nodes(_schema(name)["properties"]["spec"], ".spec"):
        if path.endswith("[]") or path.endswith("{}"):
            continue
        assert node.get("description"), f"{path} has no description for kubectl explain"


def test_every_rule_is_in_a_crd_at_its_model() -> None:
    found = {}
    for name in (JOBS, POOLS):
        for _, node in _nodes(_schema(name)):
            for v in node.get("x-kubernetes-validations", []):
                found[v["rule"]] = v["message"]
    for group in rules.ALL.values():
        for rule in group:
            assert found.get(rule.cel) == rule.message, rule.name


def test_names_scope_columns_and_subresource() -> None:
    job, pool = _load(JOBS)["spec"], _load(POOLS)["spec"]
    assert (job["scope"], pool["scope"]) == ("Namespaced", "Cluster")
    assert job["names"]["shortNames"] == ["lj"] and pool["names"]["shortNames"] == ["apool"]
    assert job["names"]["categories"] == pool["names"]["categories"] == ["llamaop"]
    version = job["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Mode", "Pool", "Accelerator", "$/h", "Cost", "Progress", "Age"]
    for column in version["additionalPrinterColumns"]:
        head, *rest = column["jsonPath"].lstrip(".").split(".")
        if head == "metadata":
            continue
        node = _schema(JOBS)["properties"][head]
        for part in rest:
            node = node["properties"].get(part, {})
        assert node.get("type") in ("string", "number", "integer"), column["jsonPath"]


def test_defaults_and_sections_match_the_models() -> None:
    spec = _schema(JOBS)["properties"]["spec"]["properties"]
    # Sections default to their own defaults: the API server checks a default against the CEL rules as is.
    assert spec["placement"]["default"] == PlacementSpec().model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    assert spec["resources"]["properties"]["families"]["default"] == ["any"]
    assert spec["placement"]["properties"]["pendingTimeout"]["default"] == "5m"
    assert "default" not in spec["training"]  # has(self.training) must stay false when it is absent


def test_generator_writes_and_checks(tmp_path: Path) -> None:
    assert crds.main(["--out", str(tmp_path)]) == 0
    assert crds.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / JOBS).write_text("stale")
    assert crds.main(["--out", str(tmp_path), "--check"]) == 1
