"""Every cross-field rule of rules.py, on both sides: pydantic rejects what the rule's CEL rejects.

The CEL half runs under cel-python when it is installed (add `cel-python` to the dev extra); the API
server's own evaluation is covered by the cluster tests (kubectl apply of bad objects).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from llama_operator.api import rules
from llama_operator.api.base import ApiModel, Rule
from llama_operator.api.job import (
    InferenceSpec,
    LlamaJobSpec,
    ModelSpec,
    PlacementSpec,
    ResourcesSpec,
    TrainingSpec,
)
from llama_operator.api.pool import AcceleratorPoolSpec
from llama_operator.api.presets import ModelDimensions

pytestmark = pytest.mark.unit

Mutation = Callable[[dict[str, Any]], None]

TRAIN = {"mode": "train", "model": {"preset": "llama3-8b"}, "training": {"steps": 10}}
SERVE = {"mode": "inference", "model": {"preset": "llama3-8b"}}
DIMS = {
    "hiddenSize": 64,
    "intermediateSize": 128,
    "numLayers": 2,
    "numHeads": 8,
    "numKvHeads": 4,
    "vocabSize": 256,
}
POOL = {"nodeSelector": {"llamaop.io/pool": "p"}, "instanceType": "p5.48xlarge"}
CPU_POOL = {**POOL, "instanceType": "m7i.8xlarge", "family": "cpu"}
CUSTOM_POOL = {
    "nodeSelector": {"llamaop.io/pool": "p"},
    "family": "nvidia",
    "acceleratorModel": "h100",
    "devicesPerNode": 8,
    "pricePerNodeHour": 50.0,
}


def _set(path: str, value: Any) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj.setdefault(part, {})
        obj[last] = value

    return apply


def _drop(path: str) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj[part]
        del obj[last]

    return apply


# (rule name, model, a valid object, a change that breaks exactly that rule)
CASES: list[tuple[str, type[ApiModel], dict[str, Any], Mutation]] = [
    ("preset-xor-dimensions", ModelSpec, {"preset": "tiny"}, _set("dimensions", DIMS)),
    ("preset-xor-dimensions", ModelSpec, {"dimensions": DIMS}, _drop("dimensions")),
    ("heads-divide-hidden", ModelDimensions, DIMS, _set("numHeads", 6)),
    ("kv-heads-divide-heads", ModelDimensions, DIMS, _set("numKvHeads", 3)),
    ("steps-xor-tokens", TrainingSpec, {"steps": 10}, _set("tokens", 1000)),
    ("steps-xor-tokens", TrainingSpec, {"tokens": 1000}, _drop("tokens")),
    ("micro-batch-within-batch", TrainingSpec, {"steps": 1, "batchSize": 4}, _set("microBatch", 8)),
    ("new-tokens-within-context", InferenceSpec, {}, _set("maxNewTokens", 4096)),
    ("any-stands-alone", ResourcesSpec, {}, _set("families", ["any", "cpu"])),
    ("one-deadline", PlacementSpec, {"finishWithin": "2h"}, _set("deadline", "2030-01-01T00:00:00Z")),
    ("training-iff-train", LlamaJobSpec, TRAIN, _drop("training")),
    ("training-iff-train", LlamaJobSpec, SERVE, _set("training", {"steps": 1})),
    ("inference-iff-serving", LlamaJobSpec, TRAIN, _set("inference", {"replicas": 1})),
    ("replica-on-one-node", LlamaJobSpec, SERVE, _set("resources.nodes", 2)),
    ("budget-bounds-training", LlamaJobSpec, SERVE, _set("placement.maxCost", 10.0)),
    ("budget-bounds-training", LlamaJobSpec, SERVE, _set("placement.finishWithin", "3h")),
    ("probe-trains", LlamaJobSpec, SERVE, _set("placement.probe", {"steps": 3})),
    ("shape-known", AcceleratorPoolSpec, POOL, _drop("instanceType")),
    ("counts-within-node", AcceleratorPoolSpec, CUSTOM_POOL, _set("allowedDeviceCounts", [1, 16])),
    ("cpu-has-no-device-resource", AcceleratorPoolSpec, CPU_POOL, _set("resourceName", "nvidia.com/gpu")),
]  # fmt: skip


def _rule(name: str) -> Rule:
    return next(r for group in rules.ALL.values() for r in group if r.name == name)


def _as_served(model: type[ApiModel], obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it: defaults filled in (the CRD carries the same defaults)."""
    return model.model_validate(obj).model_dump(by_alias=True, exclude_none=True, mode="json")


def test_every_rule_has_a_case() -> None:
    tested = {name for name, *_ in CASES}
    assert tested == {r.name for group in rules.ALL.values() for r in group}


def test_every_rule_group_is_attached_to_its_model() -> None:
    models = {m.__name__: m for _, m, _, _ in CASES}
    for name, group in rules.ALL.items():
        assert models[name].__rules__ == group


@pytest.mark.parametrize(("name", "model", "good", "breaks"), CASES)
def test_pydantic_side(name: str, model: type[ApiModel], good: dict[str, Any], breaks: Mutation) -> None:
    bad = copy.deepcopy(_as_served(model, good))
    breaks(bad)
    with pytest.raises(ValidationError) as err:
        model.model_validate(bad)
    assert _rule(name).message in str(err.value)


@pytest.mark.parametrize(("name", "model", "good", "breaks"), CASES)
def test_cel_side(name: str, model: type[ApiModel], good: dict[str, Any], breaks: Mutation) -> None:
    celpy = pytest.importorskip("celpy")
    env = celpy.Environment()
    program = env.program(env.compile(_rule(name).cel))
    served = _as_served(model, good)
    assert bool(program.evaluate({"self": celpy.json_to_cel(served)}))
    bad = copy.deepcopy(served)
    breaks(bad)
    assert not bool(program.evaluate({"self": celpy.json_to_cel(bad)}))
