"""No Python file that sits beside a directly-run script is named after a stdlib module.

Running `python dir/script.py` puts `dir` first on sys.path, so `dir/operator.py` is what every
`import operator` in that process gets, torch's dynamo included (hack/bench/operator.py broke `make bench`
that way). Inside a package (a folder with __init__.py) the name is safe: it is imported by its full name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "gomod", "node_modules", "__pycache__"}


def _script_dirs() -> list[Path]:
    """Folders outside packages that hold a Python file meant to be run directly."""
    dirs = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if SKIP & set(rel.parts) or (path.parent / "__init__.py").exists():
            continue
        text = path.read_text(errors="replace")
        if text.startswith("#!") or '__name__ == "__main__"' in text:
            dirs.add(path.parent)
    return sorted(dirs)


def test_there_are_scripts_to_check() -> None:
    assert ROOT / "hack" / "bench" in _script_dirs()


def test_no_file_beside_a_script_shadows_the_stdlib() -> None:
    shadowing = [
        str(path.relative_to(ROOT))
        for folder in _script_dirs()
        for path in folder.glob("*.py")
        if path.stem in sys.stdlib_module_names
    ]
    assert not shadowing, f"rename (they shadow stdlib modules for the scripts beside them): {shadowing}"
