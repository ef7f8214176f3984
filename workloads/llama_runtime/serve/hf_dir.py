"""Hugging Face model directories for engines that read only those (vLLM, NxD Inference).

The runtime serves three sources: a HF directory, a training checkpoint (its own row-sharded
safetensors) and a seeded, untrained preset. vLLM reads the first alone, so a checkpoint is exported to
a HF directory before it starts, and a preset becomes a config.json that vLLM fills with dummy weights
(`--load-format dummy`), with a tokenizer.json that gives the byte-level tokenizer's ids (bytes 0-255,
then BOS, EOS, PAD), so the same prompt gives the same ids on every engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llama_runtime.tokenizer import ByteTokenizer

SHARD_BYTES = 4 * 1024**3
# Names no prompt is likely to contain (a HF tokenizer matches special tokens inside text).
SPECIALS = {"<|bos|>": ByteTokenizer.bos_id, "<|eos|>": ByteTokenizer.eos_id, "<|pad|>": ByteTokenizer.pad_id}


def byte_chars() -> list[str]:
    """The character byte-level BPE writes for each byte 0-255 (GPT-2's table): printable Latin-1 bytes
    stand for themselves, the rest shift past 255 in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1)]
    printable += range(ord("\u00ae"), ord("\u00ff") + 1)
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def write_byte_tokenizer(dst: Path) -> None:
    """tokenizer.json + tokenizer_config.json whose ids equal ByteTokenizer's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = byte_chars()
    if set(chars) != set(pre_tokenizers.ByteLevel.alphabet()):
        raise RuntimeError("tokenizers' byte-level alphabet differs from the byte table")
    vocab = {char: b for b, char in enumerate(chars)}
    level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab |= SPECIALS
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|eos|>",
        "pad_token": "<|pad|>",
        "add_bos_token": False,
        "model_max_length": 1_000_000,
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def write_config(kwargs: dict[str, Any], dst: Path, dtype: str) -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(**kwargs)
    config.dtype = dtype
    config.architectures = ["LlamaForCausalLM"]
    dst.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(dst))


def export_checkpoint(found: Path, dst: Path) -> int:
    """A training checkpoint as a HF directory (config.json + safetensors shards + index); bytes written."""
    import shutil

    from safetensors.torch import save_file

    from llama_runtime.checkpoint import Checkpoint

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found / "config.json", dst / "config.json")
    weight_map: dict[str, str] = {}
    shard: dict[str, Any] = {}
    size = total = 0
    files: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal shard, size
        if shard:
            files.append(shard)
            shard, size = {}, 0

    with Checkpoint(found).reader("model") as reader:
        for name in sorted(reader.pieces):
            rows = sum(p.rows for p in reader.pieces[name])
            tensor = reader.read(name, 0, rows).contiguous()
            nbytes = tensor.numel() * tensor.element_size()
            if size and size + nbytes > SHARD_BYTES:
                flush()
            shard[name] = tensor
            size += nbytes
            total += nbytes
        flush()
        for i, tensors in enumerate(files, start=1):
            file = f"model-{i:05d}-of-{len(files):05d}.safetensors"
            save_file(tensors, str(dst / file), metadata={"format": "pt"})
            weight_map |= dict.fromkeys(tensors, file)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return total
