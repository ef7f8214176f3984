"""The command line of vLLM's OpenAI-compatible server for the production engines.

CUDA pools serve with vLLM; Neuron pools with NxD Inference through vLLM's Neuron plugin, which keeps
the `vllm serve` command line (AWS Neuron docs, "Quickstart: Serve models online with vLLM on Neuron":
`vllm serve MODEL --tensor-parallel-size N --max-model-len L --max-num-seqs B --port P`, the degree
counted in NeuronCores). Either listens on the job's port with `/health`, `/metrics` and `/v1/completions`
(vLLM docs, "Production Metrics": /metrics on the API server's port), which the operator's probes use.

Only flags documented for both are used, so one command works on either image. The model is the job's
HF directory; a training checkpoint is exported to one first, and an untrained preset is served with
dummy weights, as the runtime's own engine serves seeded ones.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from llama_runtime import checkpoint, contract
from llama_runtime.config import RunConfig, parse
from llama_runtime.errors import UserError
from llama_runtime.model import model_kwargs

DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
NEURON_PRECISIONS = ("bf16",)


def model_source(cfg: RunConfig, work: Path) -> tuple[Path, list[str], str]:
    """(HF directory, extra flags, note) for what the job gives: checkpoint > model dir > preset."""
    from llama_runtime.serve import hf_dir

    found = checkpoint.latest(cfg.checkpoint_dir)
    if found is not None:
        dst = work / f"export-{found.name}"
        if not (dst / "model.safetensors.index.json").exists():
            hf_dir.export_checkpoint(found, dst)
        if cfg.model_dir is not None and (cfg.model_dir / "tokenizer.json").exists():
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (cfg.model_dir / name).exists():
                    (dst / name).write_bytes((cfg.model_dir / name).read_bytes())
        else:
            hf_dir.write_byte_tokenizer(dst)
        return dst, [], f"exported checkpoint {found} to {dst}"
    if cfg.model_dir is not None:
        return cfg.model_dir, [], f"HF directory {cfg.model_dir}"
    dst = work / "preset"
    dtype = DTYPES[cfg.precision or "bf16"]
    hf_dir.write_config(model_kwargs(cfg.model), dst, dtype)
    hf_dir.write_byte_tokenizer(dst)
    return (
        dst,
        ["--load-format", "dummy"],
        f"untrained {cfg.model} (dummy weights): give a checkpoint or model directory",
    )


def vllm_argv(
    engine: str,
    env: Mapping[str, str],
    degree: int,
    args: list[str],
    cli: list[str] | None = None,
    work: Path | None = None,
) -> tuple[list[str], dict[str, str], list[str]]:
    """(argv, extra environment, notes) to serve the job with `engine` over `degree` devices or cores.

    `cli` is `vllm serve` (the images) or `python -m vllm.entrypoints.openai.api_server`, which takes the
    model as --model instead (a vLLM installed as a library, without its console script)."""
    cfg = parse(["serve", *args], env)
    precision = cfg.precision or "bf16"
    if engine == "nxd-inference" and precision not in NEURON_PRECISIONS:
        raise UserError(f"NxD Inference serves in {', '.join(NEURON_PRECISIONS)}, not {precision}")
    work = work or Path(tempfile.gettempdir()) / "llamaop-model"
    model, flags, note = model_source(cfg, work)
    name = cfg.served_model_name or cfg.job_name or cfg.model
    cli = cli or ["vllm", "serve"]
    argv = [*cli, str(model)] if cli[-1] == "serve" else [*cli, "--model", str(model)]
    argv += ["--host", cfg.host, "--port", str(cfg.port)]
    argv += ["--tensor-parallel-size", str(degree), "--served-model-name", name]
    argv += ["--max-num-seqs", str(cfg.max_batch), "--dtype", DTYPES[precision]]
    context = env.get(contract.CONTEXT_LENGTH, "")
    if context:
        argv += ["--max-model-len", context]
    return argv + flags, {}, [note]
