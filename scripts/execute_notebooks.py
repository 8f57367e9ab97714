"""Re-execute the tutorials in place, so GitHub and nbviewer show each lesson with its outputs.

Usage: ``.venv/bin/python scripts/execute_notebooks.py [NAME ...]`` (default: all).

Each notebook runs top to bottom in a fresh kernel on 4 real ranks, as the
tests run it; its outputs, the views' pictures and the widget state are
stored, and ``metadata.mxnb.code`` records a hash of its code cells. The
tests fail when that hash no longer matches the code (the outputs are then
stale), when an output is missing, or when an error appears where none is
expected; timings and ids that vary between runs are not compared.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def code_hash(nb: nbformat.NotebookNode) -> str:
    """The notebook's code, as the outputs were made from it."""
    code = "\n\x00\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    t0 = time.monotonic()
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nb.metadata["mxnb"] = {"code": code_hash(nb)}
    nbformat.write(nb, path)
    return time.monotonic() - t0


def main(names: list[str]) -> int:
    paths = [NOTEBOOKS / f"{n.removesuffix('.ipynb')}.ipynb" for n in names] or sorted(
        NOTEBOOKS.glob("*.ipynb")
    )
    for path in paths:
        print(f"{path.name}: {execute(path):.1f} s, {path.stat().st_size / 1e3:.0f} KB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
