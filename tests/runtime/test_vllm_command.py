"""What `launch serve` hands vLLM for each weights source: a HF directory it can read (vLLM itself cannot
run here; tests/unit/test_launch.py checks the command lines, hack/bench/gpu.sh runs it on a GPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from llama_runtime import contract
from llama_runtime.model import model_kwargs
from llama_runtime.serve.vllm import vllm_argv
from llama_runtime.tokenizer import ByteTokenizer, load_tokenizer

pytestmark = pytest.mark.runtime


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_preset_becomes_a_config_with_dummy_weights_and_the_byte_tokenizers_ids(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    env = {contract.MODEL: "llama3-8b", contract.MAX_BATCH: "8", contract.CONTEXT_LENGTH: "2048"}
    argv, _, notes = vllm_argv("vllm", env, 4, [], work=tmp_path)
    model = Path(argv[2])
    assert argv[:2] == ["vllm", "serve"] and argv[-2:] == ["--load-format", "dummy"]
    assert (_flag(argv, "--tensor-parallel-size"), _flag(argv, "--max-model-len")) == ("4", "2048")
    assert "untrained" in notes[0]
    config = LlamaConfig.from_pretrained(str(model))
    want = model_kwargs("llama3-8b")
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads, config.vocab_size) == (
        want["hidden_size"],
        want["num_hidden_layers"],
        want["num_key_value_heads"],
        want["vocab_size"],
    )
    hf, byte = load_tokenizer(model), ByteTokenizer()
    for text in ["Where does Ada go?", "naïve café 東京 🙂", " two  spaces\n", "<s> stays text"]:
        assert hf.encode(text) == byte.encode(text)
        assert hf.decode(hf.encode(text)) == text
    assert (hf.bos_id, hf.eos_id) == (byte.bos_id, byte.eos_id)


def test_a_training_checkpoint_is_exported_to_a_hf_directory(trained: dict[str, Any], tmp_path: Path) -> None:
    from llama_runtime.checkpoint import Checkpoint, latest

    env = {contract.CHECKPOINT_DIR: str(trained["checkpoint_dir"]), contract.PRECISION: "fp32"}
    argv, _, notes = vllm_argv(
        "vllm", env, 1, [], cli=["python3", "-m", "vllm.entrypoints.openai.api_server"], work=tmp_path
    )
    model = Path(_flag(argv, "--model"))
    assert "exported checkpoint" in notes[0] and _flag(argv, "--dtype") == "float32"
    index = json.loads((model / "model.safetensors.index.json").read_text())
    found = latest(trained["checkpoint_dir"])
    assert found is not None
    with Checkpoint(found).reader("model") as reader:
        assert set(index["weight_map"]) == set(reader.pieces)
        name = "model.layers.0.mlp.down_proj.weight"
        with safe_open(str(model / index["weight_map"][name]), framework="pt") as f:
            exported = f.get_tensor(name)
        rows = sum(p.rows for p in reader.pieces[name])
        assert torch.equal(exported, reader.read(name, 0, rows))
    assert (model / "config.json").exists() and (model / "tokenizer.json").exists()
    # A second start reuses the export.
    stamp = (model / "model.safetensors.index.json").stat().st_mtime_ns
    vllm_argv("vllm", env, 1, [], work=tmp_path)
    assert (model / "model.safetensors.index.json").stat().st_mtime_ns == stamp


def test_nxd_inference_refuses_fp32() -> None:
    from llama_runtime.errors import UserError

    with pytest.raises(UserError, match="NxD Inference serves in bf16"):
        vllm_argv("nxd-inference", {contract.PRECISION: "fp32"}, 2, [])
