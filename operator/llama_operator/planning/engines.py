"""Which engine serves on a pool: the runtime's capability table says, per accelerator line."""

from __future__ import annotations

from llama_runtime.capabilities import capability


def serving_engine(family: str, accelerator: str) -> str:
    """llama-runtime (cpu), vllm (cuda) or nxd-inference (neuron) for an accelerator of a family."""
    serving = capability(family, accelerator).serving
    if serving is None:
        raise ValueError(f"nothing serves on {accelerator} ({family})")
    return serving.engine
