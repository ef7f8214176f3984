"""Print, for each LlamaJob in a `kubectl get lj -o json` document on stdin, every pool it was weighed
against (status.candidates) and the verdict: the operator's reasoning, as a table per job.

    hack/explain.py          a table per job
    hack/explain.py --why    one line per job: its latest placement's message, else status.message
                             (a job still probing has no placement; its message says what it measures)
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

COLUMNS = ("pool", "accelerator", "devices x nodes", "fits", "tokens/s", "hours", "$/h", "cost", "$/M tok",
           "free", "verdict")  # fmt: skip


def fmt(value: object, pattern: str = "{}") -> str:
    return "-" if value is None else pattern.format(value)


def why(job: dict) -> str:
    st = job.get("status") or {}
    placements = st.get("placements") or []
    return (placements[-1].get("message") if placements else "") or st.get("message") or ""


def main() -> None:
    doc = json.load(sys.stdin)
    jobs = doc.get("items", [doc])
    if sys.argv[1:] == ["--why"]:
        print(f"{'JOB':<28}WHY")
        for job in jobs:
            print(f"{job['metadata']['name']:<28}{why(job)}")
        return
    console = Console(width=140)
    for job in jobs:
        st = job.get("status", {})
        name, where = job["metadata"]["name"], st.get("pool") or "-"
        title = f"{name}: {st.get('phase', '?')} on {where} ({st.get('reason', '')})"
        table = Table(title=title, title_justify="left")
        for col in COLUMNS:
            table.add_column(col)
        for c in st.get("candidates", []):
            table.add_row(
                c["pool"],
                c.get("accelerator", ""),
                f"{c.get('devicesPerNode', 0)} x {c.get('nodes', 0)}",
                "yes" if c.get("fits") else "no",
                fmt(c.get("tokensPerSecond"), "{:,.0f}"),
                fmt(c.get("hours"), "{:.2f}"),
                fmt(c.get("pricePerHour"), "{:.2f}"),
                fmt(c.get("cost"), "{:,.2f}"),
                fmt(c.get("costPerMillionTokens"), "{:.3f}"),
                str(c.get("freeDevices", 0)),
                c.get("verdict", ""),
            )
        console.print(table)
        console.print(f"  {st.get('message', '')}\n")


if __name__ == "__main__":
    main()
