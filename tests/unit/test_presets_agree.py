"""The planner and the runtime each keep a preset table (the runtime must not import the operator):
they must describe the same models, or the planner would size jobs for a model the workers do not build."""

from __future__ import annotations

import pytest

from llama_operator.api import PRESETS as PLANNER_PRESETS
from llama_operator.lifecycle.workerplan import LLAMA_CONFIG_KEYS
from llama_operator.planning import parameter_count
from llama_runtime.model import PRESETS as RUNTIME_PRESETS
from llama_runtime.model import parameter_count as runtime_parameter_count

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(PLANNER_PRESETS))
def test_planner_and_runtime_presets_are_the_same_model(name: str) -> None:
    dims = PLANNER_PRESETS[name].model_dump()
    as_config = {LLAMA_CONFIG_KEYS[k]: v for k, v in dims.items() if k in LLAMA_CONFIG_KEYS}
    runtime = RUNTIME_PRESETS[name]
    assert {k: runtime[k] for k in as_config} == as_config
    assert parameter_count(PLANNER_PRESETS[name]) == runtime_parameter_count(runtime)


def test_both_tables_name_the_same_presets() -> None:
    assert set(PLANNER_PRESETS) == set(RUNTIME_PRESETS)


def test_explicit_dimensions_reach_the_runtime_as_the_same_model() -> None:
    import json

    from llama_operator.api import LlamaJobSpec
    from llama_operator.lifecycle.workerplan import model_env
    from llama_runtime.model import model_kwargs

    dims = {"hiddenSize": 64, "intermediateSize": 160, "numLayers": 2, "numHeads": 4, "numKvHeads": 2,
            "vocabSize": 300}  # fmt: skip
    spec = LlamaJobSpec.model_validate(
        {"mode": "train", "model": {"dimensions": dims}, "training": {"steps": 1, "batchSize": 1}}
    )
    kwargs = model_kwargs(json.dumps(model_env(spec)))
    assert (kwargs["hidden_size"], kwargs["num_hidden_layers"], kwargs["vocab_size"]) == (64, 2, 300)
    assert kwargs["num_key_value_heads"] == 2
