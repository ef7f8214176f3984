"""The planner's memory model against the real runtime: small models trained by 2 ranks (gloo, FSDP2),
each rank's peak bytes measured by torch's memory tracker, compared with the planner's per-rank
estimate for the same shape under the cpu line's capability row (within 25%).

The table is printed (pytest -s, or in the failure report) and, with LLAMAOP_UPDATE_DOCS=1, written to
docs/memory.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from typing import Any

import pytest

from tests.runtime.helpers import ROOT, events, run, runtime_env
from tests.runtime.memory_report import Row, publish, table

pytestmark = pytest.mark.runtime

TOLERANCE = 0.25
# Shapes where every term is megabytes: hidden 256, 4 layers, 4 heads (2 KV heads), fp32 (the cpu line's).
WIDE_VOCAB = {"hidden_size": 256, "intermediate_size": 768, "vocab_size": 8192}
WIDE_MLP = {"hidden_size": 256, "intermediate_size": 2048, "vocab_size": 512}


@dataclass(frozen=True)
class Case:
    name: str
    dims: dict[str, int]
    seq: int
    micro: int = 1
    ac: bool = False
    eager: bool = False


CASES = [
    Case("no checkpointing, seq 256, micro 2", WIDE_VOCAB, 256, micro=2),
    Case("checkpointing, seq 2048 (2 loss chunks)", WIDE_VOCAB, 2048, ac=True),
    Case("eager attention (scores kept), seq 512", WIDE_VOCAB, 512, micro=2, eager=True),
    Case("checkpointing, MLP-heavy, seq 1024", WIDE_MLP, 1024, ac=True),
]


def _model(dims: dict[str, int]) -> dict[str, Any]:
    return {
        "base": "tiny",
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        **dims,
    }


def _flags(case: Case) -> list[str]:
    flags = ["--backend", "cpu", "--model", json.dumps(_model(case.dims)), "--metrics-port", "0"]
    flags += ["--steps", "2", "--seq-len", str(case.seq), "--micro-batch", str(case.micro)]
    flags += ["--batch-size", str(2 * case.micro), "--activation-checkpointing", str(int(case.ac))]
    return flags


def _planned(case: Case) -> Any:
    from llama_operator.api import ModelSpec
    from llama_operator.planning import llama
    from llama_runtime.capabilities import CAPABILITIES

    row = CAPABILITIES["cpu"].training
    assert row is not None
    if case.eager:
        row = replace(row, attention="materialized")  # what the XLA line's row says of its attention
    d = _model(case.dims)
    dims = {
        "hiddenSize": d["hidden_size"],
        "intermediateSize": d["intermediate_size"],
        "numLayers": d["num_hidden_layers"],
        "numHeads": d["num_attention_heads"],
        "numKvHeads": d["num_key_value_heads"],
        "vocabSize": d["vocab_size"],
        "tieEmbeddings": True,
    }
    shape = llama.shape_of(ModelSpec.model_validate({"dimensions": dims}))
    return llama.training_memory(
        shape,
        row,
        micro_batch=case.micro,
        sequence_length=case.seq,
        precision="fp32",
        activation_checkpointing=case.ac,
    )


@pytest.fixture(scope="module")
def measured() -> dict[str, list[dict[str, Any]]]:
    probe = [{"name": c.name, "flags": _flags(c), "eager": c.eager} for c in CASES]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [sys.executable, *launcher, str(ROOT / "tests/runtime/memory_probe.py"), json.dumps(probe)]
    env = runtime_env(PYTHONPATH=f"{ROOT / 'workloads'}:{ROOT}")
    proc = run(args, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in events(proc.stdout):
        found.setdefault(doc["case"], []).append(doc)
    assert all(len(found.get(c.name, [])) == 2 for c in CASES), sorted(found)
    return found


def _rows(case: Case, ranks: list[dict[str, Any]]) -> list[Row]:
    plan = _planned(case)

    def most(get: Any) -> float:
        return float(max(get(r) for r in ranks))

    name = case.name
    state = most(lambda r: r["state"]["total"])
    gathered = most(lambda r: r["peak"]["groups"]["gathered"])
    activations = most(lambda r: r["peak"]["groups"]["activations"])
    return [
        Row(name, "weights + gradients + AdamW (local shards)", plan.sharded / 2, state),
        Row(name, "gathered: root and layer unsharded, collectives", plan.gathered, gathered),
        Row(name, "activations + backward working set", plan.activations + plan.working, activations),
        Row(name, "peak total", plan.per_holder(2), most(lambda r: r["peak"]["total"])),
    ]


def test_planner_memory_matches_what_two_fsdp2_ranks_hold(measured: dict[str, list[dict[str, Any]]]) -> None:
    rows = [row for case in CASES for row in _rows(case, measured[case.name])]
    text = table(rows)
    print("\nPer-rank memory, planner vs measured (2 ranks, gloo, FSDP2, fp32):\n" + text)
    publish("training", text)
    for row in rows:
        if row.term.startswith("weights"):
            # Local shard sizes: the planner's 16 bytes per parameter over 2 ranks, to the byte.
            assert row.measured == pytest.approx(row.planned, rel=1e-3), row
        elif not row.term.startswith("gathered"):
            assert abs(row.ratio - 1) <= TOLERANCE, f"{row}\n{text}"
    # The gathered term is the smallest; it is shown, and only bounded loosely (the moments FSDP2
    # keeps a layer's buffers differ from the model's simultaneous count).
    assert all(0.5 <= r.ratio <= 1.5 for r in rows if r.term.startswith("gathered")), text
