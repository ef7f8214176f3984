"""Print, for each LlamaJob in a `kubectl get lj -o json` document on stdin, every pool it was weighed
against (status.candidates) and the verdict: the operator's reasoning, as a table per job."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

COLUMNS = ("pool", "accelerator", "devices x nodes", "fits", "tokens/s", "hours", "$/h", "cost", "$/M tok",
           "free", "verdict")  # fmt: skip


def fmt(value: object, pattern: str = "{}") -> str:
    return "-" if value is None else pattern.format(value)


def main() -> None:
    doc = json.load(sys.stdin)
    console = Console(width=140)
    for job in doc.get("items", [doc]):
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
