"""Training data: .txt / .jsonl files tokenized into one stream, cut into fixed windows.

Sequence i of the run is a pure function of (corpus, seq_len, seed, i), so the only state to checkpoint
is the number of sequences consumed; any world size or backend resumes at exactly the same data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llama_runtime.errors import UserError
from llama_runtime.tokenizer import Tokenizer

SHIPPED_CORPUS = Path(__file__).parent / "data" / "synthetic.txt"


def corpus_files(data_dir: Path | None) -> list[Path]:
    """The files to train on; the shipped synthetic corpus when no directory is given."""
    if data_dir is None:
        return [SHIPPED_CORPUS]
    if not data_dir.is_dir():
        raise UserError(f"data directory {data_dir} does not exist")
    files = sorted(p for p in data_dir.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
    if not files:
        raise UserError(f"data directory {data_dir} has no .txt or .jsonl files")
    return files


def _documents(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8", errors="replace")]
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{n} is not valid JSON") from None
        if isinstance(row, dict) and isinstance(row.get("text"), str):
            docs.append(row["text"])
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str):
            docs.append(row["prompt"] + str(row.get("completion", "")))
        else:
            raise UserError(f"{path}:{n} has no 'text' (or 'prompt'/'completion') string")
    return docs


def tokenize_corpus(files: list[Path], tokenizer: Tokenizer) -> np.ndarray:
    """All documents, each framed by BOS/EOS, as one int32 token stream."""
    ids: list[int] = []
    for path in files:
        for doc in _documents(path):
            if tokenizer.bos_id is not None:
                ids.append(tokenizer.bos_id)
            ids.extend(tokenizer.encode(doc))
            ids.append(tokenizer.eos_id)
    return np.asarray(ids, dtype=np.int32)


class TokenWindows:
    """Non-overlapping windows of seq_len + 1 tokens, reshuffled every pass over the corpus."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.windows = (len(tokens) - 1) // seq_len
        if self.windows < 1:
            raise UserError(f"the corpus has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def sequence(self, index: int) -> np.ndarray:
        epoch, i = divmod(index, self.windows)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.windows)
            self._epoch = epoch
        start = int(self._perm[i]) * self.seq_len
        return self.tokens[start : start + self.seq_len + 1]

    def batch(self, first: int, count: int) -> np.ndarray:
        """Sequences first .. first+count-1 as a (count, seq_len + 1) int64 array."""
        return np.stack([self.sequence(first + k) for k in range(count)]).astype(np.int64)
