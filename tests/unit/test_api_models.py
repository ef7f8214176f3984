"""The API models: defaults, camelCase in and out, validation of single fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from llama_operator.api import (
    GROUP,
    PRESETS,
    VERSION,
    AcceleratorPool,
    AcceleratorPoolSpec,
    LlamaJob,
    LlamaJobSpec,
    LlamaJobStatus,
    Phase,
    PresetName,
    Progress,
    duration_seconds,
)
from llama_operator.api.types import ACCELERATORPOOL_PLURAL, LLAMAJOB_PLURAL

pytestmark = pytest.mark.unit


def train(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": "train", "model": {"preset": "llama3-8b"}, "training": {"steps": 10}}
    spec.update(overrides)
    return spec


def test_names() -> None:
    assert (GROUP, VERSION, LLAMAJOB_PLURAL, ACCELERATORPOOL_PLURAL) == (
        "llamaop.io",
        "v1alpha1",
        "llamajobs",
        "acceleratorpools",
    )


def test_preset_enum_matches_the_table() -> None:
    assert tuple(PRESETS) == get_args(PresetName)


def test_defaults_fill_a_minimal_training_spec() -> None:
    spec = LlamaJobSpec.model_validate(train())
    assert spec.resources.families == ["any"]
    assert spec.placement.policy == "cheapest"
    assert spec.placement.capacity_types == ["on-demand", "spot", "reserved"]
    assert spec.placement.backoff_limit == 3
    assert duration_seconds(spec.placement.pending_timeout) == 300
    assert spec.training is not None and spec.training.checkpoint.interval == 100
    assert spec.training.total_tokens() == 10 * 8 * 2048


def test_camel_case_round_trip_of_what_the_api_server_returns() -> None:
    body = train(placement={"maxPricePerHour": 12.5, "pendingTimeout": 90, "capacityTypes": ["spot"]})
    spec = LlamaJobSpec.model_validate(body)
    assert spec.placement.max_price_per_hour == 12.5
    dumped = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["placement"]["maxPricePerHour"] == 12.5
    assert LlamaJobSpec.model_validate(dumped) == spec


def test_status_dumps_as_a_camel_case_patch() -> None:
    status = LlamaJobStatus(
        phase=Phase.RUNNING,
        price_per_hour=1.5,
        node_names=["n1"],
        progress=Progress(step=5, total_steps=10, tokens_per_second=100.0),
        estimated_finish=datetime(2026, 6, 1, tzinfo=UTC),
    )
    patch = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert patch["phase"] == "Running"
    assert patch["pricePerHour"] == 1.5
    assert patch["nodeNames"] == ["n1"]
    assert patch["progress"] == {"step": 5, "totalSteps": 10, "tokensPerSecond": 100.0}
    assert patch["estimatedFinish"] == "2026-06-01T00:00:00Z"


def test_status_ignores_fields_from_newer_operators() -> None:
    assert LlamaJobStatus.model_validate({"phase": "Queued", "somethingNew": 1}).phase == Phase.QUEUED


def test_spec_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="maxPrice"):
        LlamaJobSpec.model_validate(train(placement={"maxPrice": 3}))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (train(model={"preset": "llama9-1t"}), "preset"),
        (train(resources={"families": ["tpu"]}), "families"),
        (train(training={"steps": 0}), "steps"),
        (train(training={"steps": -5}), "steps"),
        (train(training={"steps": 10, "batchSize": 0}), "batchSize"),
        (train(resources={"devicesPerNode": 0}), "devicesPerNode"),
        (train(placement={"maxCost": 0}), "maxCost"),
        (train(placement={"pendingTimeout": "soon"}), "duration"),
        (train(placement={"pendingTimeout": 0}), "positive"),
        (train(placement={"deadline": "2026-06-01T00:00:00"}), "timezone"),
        (train(placement={"capacityTypes": ["spot", "spot"]}), "unique"),
        (train(data={"uri": "relative/dir"}), "uri"),
        (train(priority=5000), "priority"),
    ],
)
def test_field_bounds(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        LlamaJobSpec.model_validate(body)
    assert fragment.lower() in str(err.value).lower()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), (45, 45)]
)
def test_duration_seconds(text: str | int, seconds: float) -> None:
    assert duration_seconds(text) == seconds


def test_kinds_parse_full_objects() -> None:
    job = LlamaJob.model_validate(
        {
            "apiVersion": "llamaop.io/v1alpha1",
            "kind": "LlamaJob",
            "metadata": {"name": "a", "namespace": "team", "resourceVersion": "7"},
            "spec": train(),
        }
    )
    assert job.key() == "team/a"
    pool = AcceleratorPool.model_validate(
        {
            "kind": "AcceleratorPool",
            "metadata": {"name": "p"},
            "spec": {"nodeSelector": {"llamaop.io/pool": "p"}, "instanceType": "p5.48xlarge"},
            "status": {
                "freeDevices": 3,
                "learnedSpeeds": [{"mode": "train", "precision": "bf16", "factor": 0.8, "runs": 2}],
            },
        }
    )
    assert pool.status is not None and pool.status.learned_speeds[0].factor == 0.8


def test_a_pool_status_of_an_earlier_operator_still_reads() -> None:
    """observedThroughput (preset-keyed tokens/s) was replaced by learnedSpeeds; old objects parse."""
    pool = AcceleratorPool.model_validate(
        {
            "kind": "AcceleratorPool",
            "metadata": {"name": "p"},
            "spec": {"nodeSelector": {"llamaop.io/pool": "p"}, "instanceType": "p5.48xlarge"},
            "status": {"freeDevices": 3, "observedThroughput": {"llama3-8b": 9000.0}},
        }
    )
    assert pool.status is not None and pool.status.free_devices == 3 and pool.status.learned_speeds == []


def test_pool_needs_a_node_selector() -> None:
    with pytest.raises(ValidationError, match="nodeSelector"):
        AcceleratorPoolSpec.model_validate({"nodeSelector": {}, "instanceType": "p5.48xlarge"})
