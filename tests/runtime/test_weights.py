"""HF-format weights and tokenizers from a local directory (never a hub), and the model presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime.conftest import train_here
from tests.runtime.helpers import BASE_ARGS

pytestmark = pytest.mark.runtime

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Llama saved with save_pretrained, and a BPE tokenizer trained here on the shipped corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llama_runtime.dataset import SHIPPED_CORPUS

    path = tmp_path_factory.mktemp("hf")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train(
        [str(SHIPPED_CORPUS)], trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"])
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(path))
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=416,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    return path


def test_hf_weights_load_row_exact(hf_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from llama_runtime.model import build_model, llama_config
    from llama_runtime.weights import hf_reader, materialize

    saved = load_file(str(hf_dir / "model.safetensors"))
    model = build_model(llama_config("ignored-when-a-dir-is-given", hf_dir), "meta")
    with hf_reader(hf_dir) as source:
        materialize(model, torch.device("cpu"), source)
    got = dict(model.named_parameters())
    assert set(got) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(got[name].detach(), tensor), name
    assert torch.isfinite(model.model.rotary_emb.inv_freq).all()


def test_hf_tokenizer_and_chat_template(hf_dir: Path) -> None:
    from llama_runtime.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

    tok = load_tokenizer(hf_dir)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size <= 416
    text = "Ada sells 3 red apples at the market."
    ids = tok.encode(text)
    assert len(ids) < len(text) and tok.decode(ids) == text  # BPE merges, and round-trips
    chat = tok.decode(tok.chat_prompt([{"role": "user", "content": "hi"}]))
    assert chat.endswith("user: hiassistant:")  # the template's text, specials skipped
    assert isinstance(load_tokenizer(None), ByteTokenizer)


def test_training_starts_from_hf_weights(hf_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    result = train_here(
        [
            *BASE_ARGS,
            "--model-dir",
            str(hf_dir),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--checkpoint-dir",
            str(tmp_path),
        ]
    )
    assert len(result["losses"]) == 3
    state = json.loads((tmp_path / "step-000000003" / "state.json").read_text())
    assert state["shapes"]["lm_head.weight"] == [416, 64]  # untied head kept
    # The weights moved from the loaded ones, by a learning-rate-sized step.
    trained = load_file(str(tmp_path / "step-000000003" / "model-rank00000.safetensors"))
    start = load_file(str(hf_dir / "model.safetensors"))
    delta = (
        (trained["model.layers.0.mlp.up_proj.weight"] - start["model.layers.0.mlp.up_proj.weight"])
        .abs()
        .max()
    )
    assert 0 < float(delta) < 0.01


@pytest.mark.parametrize("preset", ["tiny", "llama3-1b", "llama3-3b", "llama3-8b", "llama3-70b"])
def test_presets_build_and_count(preset: str) -> None:
    from llama_runtime.model import PRESETS, build_model, llama_config, parameter_count

    model = build_model(llama_config(preset, None), "meta")  # meta: no memory, even for 70b
    assert sum(p.numel() for p in model.parameters()) == parameter_count(PRESETS[preset])


def test_explicit_dimensions() -> None:
    from llama_runtime.errors import UserError
    from llama_runtime.model import model_kwargs

    got = model_kwargs('{"base": "llama3-8b", "num_hidden_layers": 2}')
    assert got["num_hidden_layers"] == 2 and got["hidden_size"] == 4096
    with pytest.raises(UserError, match="multiple of num_key_value_heads"):
        model_kwargs(
            '{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, '
            '"num_attention_heads": 4, "num_key_value_heads": 3}'
        )
