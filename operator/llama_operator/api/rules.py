"""Every cross-field rule of both kinds, once: the CEL the CRDs carry and the Python the models check.

Per-field bounds (minimum, maxLength, enum, pattern) live on the fields themselves; this table holds only
what spans several fields. `tests/unit/test_api_rules.py` evaluates both sides on the same objects.
"""

from __future__ import annotations

from typing import Any

from llama_operator.api.base import Rule


def _has(value: Any) -> bool:
    return value is not None


MODEL = (
    Rule(
        "preset-xor-dimensions",
        "has(self.preset) != has(self.dimensions)",
        "set exactly one of model.preset and model.dimensions",
        lambda m: _has(m.preset) != _has(m.dimensions),
    ),
)

DIMENSIONS = (
    Rule(
        "heads-divide-hidden",
        "self.hiddenSize % self.numHeads == 0",
        "dimensions.hiddenSize must be a multiple of numHeads",
        lambda d: d.hidden_size % d.num_heads == 0,
    ),
    Rule(
        "kv-heads-divide-heads",
        "self.numHeads % self.numKvHeads == 0",
        "dimensions.numHeads must be a multiple of numKvHeads",
        lambda d: d.num_heads % d.num_kv_heads == 0,
    ),
)

TRAINING = (
    Rule(
        "steps-xor-tokens",
        "has(self.steps) != has(self.tokens)",
        "set exactly one of training.steps and training.tokens",
        lambda t: _has(t.steps) != _has(t.tokens),
    ),
    Rule(
        "micro-batch-within-batch",
        "self.microBatch <= self.batchSize",
        "training.microBatch must not exceed training.batchSize",
        lambda t: t.micro_batch <= t.batch_size,
    ),
)

INFERENCE = (
    Rule(
        "new-tokens-within-context",
        "self.maxNewTokens < self.contextLength",
        "inference.maxNewTokens must be less than inference.contextLength",
        lambda i: i.max_new_tokens < i.context_length,
    ),
)

RESOURCES = (
    Rule(
        "any-stands-alone",
        "!('any' in self.families) || size(self.families) == 1",
        "resources.families: 'any' cannot be combined with other families",
        lambda r: "any" not in r.families or len(r.families) == 1,
    ),
)

PLACEMENT = (
    Rule(
        "one-deadline",
        "!(has(self.deadline) && has(self.finishWithin))",
        "set at most one of placement.deadline and placement.finishWithin",
        lambda p: p.deadline is None or p.finish_within is None,
    ),
)

JOB_SPEC = (
    Rule(
        "training-iff-train",
        "(self.mode == 'train') == has(self.training)",
        "spec.training is required when mode is train and not allowed otherwise",
        lambda s: (s.mode == "train") == _has(s.training),
    ),
    Rule(
        "inference-iff-serving",
        "self.mode == 'inference' || !has(self.inference)",
        "spec.inference is only allowed when mode is inference",
        lambda s: s.mode == "inference" or s.inference is None,
    ),
    Rule(
        "probe-trains",
        "self.mode == 'train' || !has(self.placement.probe)",
        "placement.probe measures training; an inference job is placed by estimate",
        lambda s: s.mode == "train" or s.placement.probe is None,
    ),
    Rule(
        "replica-on-one-node",
        "self.mode != 'inference' || !has(self.resources.nodes) || self.resources.nodes == 1",
        "an inference replica runs on one node: set resources.nodes to 1 and scale with inference.replicas",
        lambda s: s.mode != "inference" or s.resources.nodes in (None, 1),
    ),
    Rule(
        "budget-bounds-training",
        "self.mode == 'train' || (!has(self.placement.maxCost) && !has(self.placement.deadline)"
        " && !has(self.placement.finishWithin))",
        "placement.maxCost, deadline and finishWithin apply to training; bound inference by maxPricePerHour",
        lambda s: (
            s.mode == "train"
            or (
                s.placement.max_cost is None
                and s.placement.deadline is None
                and s.placement.finish_within is None
            )
        ),
    ),
)

POOL_SPEC = (
    Rule(
        "shape-known",
        "has(self.instanceType) || (has(self.family) && has(self.acceleratorModel)"
        " && has(self.devicesPerNode) && has(self.pricePerNodeHour))",
        "set instanceType, or family, acceleratorModel, devicesPerNode and pricePerNodeHour",
        lambda p: (
            _has(p.instance_type)
            or all(
                _has(v) for v in (p.family, p.accelerator_model, p.devices_per_node, p.price_per_node_hour)
            )
        ),
    ),
    Rule(
        "counts-within-node",
        "!has(self.devicesPerNode) || self.allowedDeviceCounts.all(c, c <= self.devicesPerNode)",
        "allowedDeviceCounts must not exceed devicesPerNode",
        lambda p: p.devices_per_node is None or all(c <= p.devices_per_node for c in p.allowed_device_counts),
    ),
    Rule(
        "cpu-has-no-device-resource",
        "!has(self.family) || self.family != 'cpu' || !has(self.resourceName)",
        "a cpu pool has no device resourceName (its devices are pod slots)",
        lambda p: p.family != "cpu" or p.resource_name is None,
    ),
)

ALL: dict[str, tuple[Rule, ...]] = {
    "ModelSpec": MODEL,
    "ModelDimensions": DIMENSIONS,
    "TrainingSpec": TRAINING,
    "InferenceSpec": INFERENCE,
    "ResourcesSpec": RESOURCES,
    "PlacementSpec": PLACEMENT,
    "LlamaJobSpec": JOB_SPEC,
    "AcceleratorPoolSpec": POOL_SPEC,
}
