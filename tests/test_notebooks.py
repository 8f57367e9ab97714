"""Notebooks executed top to bottom by a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from procs import cluster_processes

pytestmark = pytest.mark.cluster

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif "data" in o:
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


_executed: dict[Path, nbformat.NotebookNode] = {}


def execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook once per session in a fresh python3 kernel."""
    if path not in _executed:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()  # raises CellExecutionError on any failing cell or assert
        _executed[path] = nb
    return _executed[path]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_asserts(path):
    before = {p.pid for p in cluster_processes()}
    nb = execute(path)
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "[rank 0]" in text
    left = {p.pid for p in cluster_processes()} - before
    assert not left, f"notebook left cluster processes {left}"


def test_getting_started_shows_each_rank():
    assert NOTEBOOKS[0].name == "01-getting-started.ipynb"
    nb = execute(NOTEBOOKS[0])
    outs = [_text(c) for c in nb.cells if c.cell_type == "code"]
    hello = next(o for o in outs if "I am rank" in o)
    for r in range(4):
        assert f"[rank {r}] I am rank {r} of 4; world.size() = 4" in hello
    summed = next(o for o in outs if "sum:" in o)
    for r in range(4):
        assert f"[rank {r}] mine: array([{r + 1}, {r + 1}, {r + 1}]" in summed
    assert "[rank 1] received array([0, 10, 20, 30]" in "".join(outs)
    assert "all checks passed" in "".join(outs)
