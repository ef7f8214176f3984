"""`llamaop report`: a LlamaJob's placement as a person wants to see it (rows.py: what is shown; chart.py: the
PNG)."""

from llama_operator.report.rows import Actual, Report, Row, build

__all__ = ["Actual", "Report", "Row", "build"]
