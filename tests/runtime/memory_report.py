"""Planner vs measured memory, per rank: the rows, the Markdown table, and docs/memory.md.

test_memory.py (training) builds Rows from memory_probe.py's measurements and the planner's estimate; a
serving test can add its own (weights and KV cache per tensor-parallel rank) the same way and publish
them under its own section of docs/memory.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tests.runtime.helpers import ROOT

MIB = 1024**2
DOC = ROOT / "docs" / "memory.md"


@dataclass(frozen=True)
class Row:
    case: str
    term: str
    planned: float
    """Bytes per rank the planner counts."""
    measured: float
    """Bytes per rank the run held (the maximum over both ranks)."""

    @property
    def ratio(self) -> float:
        return self.measured / self.planned if self.planned else float("inf")


def table(rows: list[Row]) -> str:
    lines = [
        "| case | term | planner (MiB) | measured (MiB) | measured / planner |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.term} | {r.planned / MIB:,.1f} | {r.measured / MIB:,.1f} | {r.ratio:.2f} |"
        )
    return "\n".join(lines)


def publish(section: str, text: str, path: Path = DOC) -> bool:
    """Replaces `section`'s generated block in docs/memory.md when LLAMAOP_UPDATE_DOCS=1 (the committed
    page then shows the latest measurement); returns whether it wrote."""
    if os.environ.get("LLAMAOP_UPDATE_DOCS") != "1":
        return False
    begin, end = f"<!-- {section}: begin -->", f"<!-- {section}: end -->"
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else f"{doc.rstrip()}\n\n{block}\n"
    path.write_text(doc)
    return True
