"""From a placed job (spec + the planner's decision + its pool) to the workers package's WorkerPlan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from llama_operator.api import AcceleratorPool, LlamaJobSpec, ProbeSpec
from llama_operator.planning.decision import Decision
from llama_operator.planning.engines import serving_engine
from llama_operator.workers import (
    InferenceSettings,
    Toleration,
    TrainingSettings,
    WorkerPlan,
    neuron_settings_for_instance_type,
)

# ModelDimensions field -> transformers LlamaConfig keyword (what the runtime builds the model from).
LLAMA_CONFIG_KEYS: Mapping[str, str] = {
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_position_embeddings",
    "tie_embeddings": "tie_word_embeddings",
}


def model_env(spec: LlamaJobSpec) -> str | dict[str, Any]:
    """LLAMAOP_MODEL: the preset name, or explicit dimensions as LlamaConfig keywords."""
    if spec.model.dimensions is not None:
        dims = spec.model.dimensions.model_dump()
        return {LLAMA_CONFIG_KEYS[k]: v for k, v in dims.items() if k in LLAMA_CONFIG_KEYS}
    return spec.model.preset or "tiny"


def worker_plan(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: LlamaJobSpec,
    decision: Decision,
    pool: AcceleratorPool,
    attempt: int,
    default_images: Mapping[str, str],
    image_pull_policy: str,
    probe: ProbeSpec | None = None,
) -> WorkerPlan:
    """Raises ValueError when the job cannot be rendered (the caller fails the job with the reason).

    `probe`: the attempt is a probe of the job: warm-up + measured steps only, the warm-up left out of the
    measured speed, and no checkpoint read or written (the job's own run must not resume from a probe)."""
    backend = decision.backend or "cpu"
    image = pool.spec.image or default_images[backend]
    tolerations = tuple(
        Toleration.from_manifest(t.model_dump(by_alias=True, exclude_none=True))
        for t in pool.spec.tolerations
    )
    neuron = None
    if backend == "neuron":
        neuron = neuron_settings_for_instance_type(decision.instance_type or "")
    training = TrainingSettings()
    inference = InferenceSettings()
    precision = None
    if spec.mode == "train" and spec.training is not None:
        t = spec.training
        training = TrainingSettings(
            steps=t.total_steps(),
            seq_len=t.sequence_length,
            batch_size=t.batch_size,
            micro_batch=t.micro_batch,
            learning_rate=t.learning_rate,
            checkpoint_every=t.checkpoint.interval,
            activation_checkpointing=decision.activation_checkpointing,
        )
        if probe is not None:
            training = replace(
                training,
                steps=probe.warmup_steps + probe.steps,
                checkpoint_every=0,
                measure_after=probe.warmup_steps,
            )
        # bf16 autocast on CPU is slow and the default fp32 is what the CPU tests compare against.
        precision = t.precision if backend != "cpu" else None
    engine = "llama-runtime"
    if spec.mode == "inference":
        s = spec.serving()
        inference = InferenceSettings(
            port=s.port,
            max_batch=s.max_batch,
            max_new_tokens=s.max_new_tokens,
            context_length=s.context_length,
        )
        engine = serving_engine(decision.family or "cpu", decision.accelerator or "")
    checkpoint = spec.training.checkpoint.uri if spec.training and probe is None else ""
    return WorkerPlan(
        job_name=name,
        namespace=namespace,
        uid=uid,
        mode=spec.mode,
        backend=backend,  # type: ignore[arg-type]
        pool=decision.pool or pool.metadata.name,
        image=image,
        image_pull_policy=image_pull_policy,  # type: ignore[arg-type]
        node_names=decision.node_names,
        model=model_env(spec),
        attempt=attempt,
        # What the planner booked (decision.requests) is exactly what the pods request. On cpu pools the
        # devices are worker slots: no resource request, but the launcher's process count.
        devices_per_pod=decision.devices_per_node,
        resource_name=decision.requests.resource_name,
        accelerator=decision.accelerator or "",
        engine=engine,  # type: ignore[arg-type]
        neuron=neuron,
        efa_per_pod=decision.requests.efa,
        node_selector=dict(pool.spec.node_selector),
        tolerations=tolerations,
        cpu_request=decision.requests.cpu,
        memory_request=decision.requests.memory,
        model_dir=spec.model.weights_uri or "",
        data_dir=spec.data.uri,
        checkpoint_uri=checkpoint,
        precision=precision,
        training=training,
        inference=inference,
        probe=probe is not None,
    )
