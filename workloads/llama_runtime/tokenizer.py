"""Tokenizers: a byte-level one by default, or a HF tokenizer from a local directory (never downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from llama_runtime.errors import UserError


class Tokenizer(Protocol):
    bos_id: int | None
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes 0-255 plus BOS (256), EOS (257) and PAD (258): needs no files and fits any preset."""

    bos_id: int | None = 256
    eos_id: int = 257
    pad_id: int = 258
    vocab_size: int = 259

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        text = "".join(f"<|{m['role']}|>\n{_content(m)}\n" for m in messages) + "<|assistant|>\n"
        return [self.bos_id or 0, *self.encode(text)]


class HFTokenizer:
    """A transformers tokenizer read from a local directory; uses its chat template when it has one."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the tokenizer in {path}: {e}") from None
        eos = self._tok.eos_token_id
        if eos is None:
            raise UserError(f"the tokenizer in {path} has no eos token")
        self.eos_id = int(eos)
        self.bos_id = self._tok.bos_token_id
        self.vocab_size = len(self._tok)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        if getattr(self._tok, "chat_template", None):
            ids = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            # transformers 5 returns a BatchEncoding, 4.x a list
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        text = "".join(f"{m['role']}: {_content(m)}\n" for m in messages) + "assistant:"
        prefix = [self.bos_id] if self.bos_id is not None else []
        return prefix + self.encode(text)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def load_tokenizer(model_dir: Path | None) -> Tokenizer:
    if model_dir is not None and any(
        (model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    ):
        return HFTokenizer(model_dir)
    return ByteTokenizer()
