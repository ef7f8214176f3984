"""The report's chart: cost per million tokens and time to finish per candidate pool, estimated against
measured (and against what a finished run really took), the chosen pool marked. A PNG drawn by
matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

from llama_operator.report.rows import Report, Row

ESTIMATED = "#9ecae1"
MEASURED = "#08519c"
ACTUAL = "#e6550d"
CHOSEN_BAND = "#fff3c4"


def _value(row: Row, which: str, metric: str) -> float | None:
    if metric == "cost":
        return row.est_cost_per_million if which == "est" else row.measured_cost_per_million
    return row.est_hours if which == "est" else row.measured_hours


def render(report: Report, path: Path, *, dpi: int = 110) -> Path:
    """Write the chart of `report` to `path` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")  # headless; before pyplot is imported
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in report.rows
        if r.fits and (r.est_cost_per_million is not None or r.measured_cost_per_million)
    ]
    rows.sort(
        key=lambda r: r.measured_cost_per_million or r.est_cost_per_million or float("inf"), reverse=True
    )
    labels = [f"{'> ' if r.chosen else ''}{r.pool}\n{r.accelerator}" for r in rows]
    height = max(2.6, 0.55 * len(rows) + 1.6)
    fig, axes = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    metrics = (("cost", "USD per million tokens"), ("hours", "hours to finish the job"))
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        ys = range(len(rows))
        est = [_value(r, "est", metric) or 0.0 for r in rows]
        meas = [_value(r, "measured", metric) or 0.0 for r in rows]
        ax.barh([y + 0.2 for y in ys], est, height=0.38, color=ESTIMATED, label="estimated")
        ax.barh([y - 0.2 for y in ys], meas, height=0.38, color=MEASURED, label="measured by probe")
        for y, r in zip(ys, rows, strict=True):
            if r.chosen:
                ax.axhspan(y - 0.5, y + 0.5, color=CHOSEN_BAND, zorder=0)
            if r.probe_phase in ("Failed", "TimedOut"):
                ax.text(0, y - 0.2, f"  probe {r.probe_phase}: {r.probe_reason}", va="center", fontsize=8,
                        color="#a50f15")  # fmt: skip
        actual = report.actual
        if actual is not None and actual.phase == "Succeeded":
            value = actual.cost_per_million if metric == "cost" else actual.hours
            ys_chosen = [y for y, r in zip(ys, rows, strict=True) if r.chosen]
            if value and ys_chosen:
                ax.plot([value], [ys_chosen[0]], marker="D", markersize=9, color=ACTUAL, linestyle="none",
                        label="actual run")  # fmt: skip
        positive = [v for v in est + meas if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(range(len(rows))), labels)
    axes[0].legend(loc="lower right", fontsize=8)
    chosen = report.chosen or "none yet"
    fig.suptitle(f"{report.job}: {report.phase}, chosen pool {chosen} (marked >)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
