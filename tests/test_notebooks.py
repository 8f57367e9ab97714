"""The tutorials, executed top to bottom by a real Jupyter kernel on 4 real MPI ranks.

Each notebook ends with cells that assert what it taught, so a wrong result
fails the notebook and so this test.  Cells that are meant to fail carry the
tag ``raises-exception`` (nbclient then goes on); every such cell must really
fail, and no other cell may.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from procs import cluster_processes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from execute_notebooks import code_hash

pytestmark = pytest.mark.cluster

NOTEBOOKS_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
#: Each tutorial must run top to bottom in this many seconds (4 ranks, 2 cores).
BUDGET = 120.0
RAISES = "raises-exception"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif "data" in o:
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


def run(nb: nbformat.NotebookNode, cwd: Path = NOTEBOOKS_DIR) -> nbformat.NotebookNode:
    """Execute in a fresh python3 kernel; raises CellExecutionError on an unexpected error."""
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


_executed: dict[Path, tuple[nbformat.NotebookNode, float]] = {}


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook once per session; returns it with its outputs, and the seconds it took."""
    if path not in _executed:
        nb = nbformat.read(path, as_version=4)
        t0 = time.monotonic()
        run(nb)
        _executed[path] = (nb, time.monotonic() - t0)
    return _executed[path]


def _left(before: set[int], wait: float = 15.0) -> set[int]:
    """Cluster processes started since ``before`` that are still alive after ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        left = {p.pid for p in cluster_processes()} - before
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _tagged(cell) -> bool:
    return RAISES in cell.get("metadata", {}).get("tags", [])


def _errored(cell) -> bool:
    return any(o.output_type == "error" for o in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_asserts(path, record_property):
    before = {p.pid for p in cluster_processes()}
    nb, took = execute(path)
    record_property("seconds", round(took, 1))
    print(f"{path.name}: {took:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(_text(c) for c in code)
    assert "[rank 0]" in text and "[rank 3]" in text  # ran on 4 ranks
    assert "all checks passed" in text  # its checking cell ran to the end
    for i, cell in enumerate(code):
        if _tagged(cell):
            assert _errored(cell), f"code cell {i} is tagged {RAISES} but did not fail"
        else:
            assert not _errored(cell), f"code cell {i} failed"
    assert took < BUDGET, f"{path.name} took {took:.0f} s (budget {BUDGET:.0f} s)"
    left = _left(before)
    assert not left, f"notebook left cluster processes {left}"


def test_course_is_complete_and_in_order():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01-getting-started",
        "02-collectives",
        "03-point-to-point",
        "04-groups",
        "05-data-parallel-training",
        "06-tensor-parallel",
        "07-debugging",
        "08-from-pytorch-and-mpi4py",
        "09-missing-primitives",
        "10-how-collectives-are-built",
        "11-debugging-lab",
    ]
    taught = {
        "01-getting-started": ["is_available", "init(", "Group", "rank()", "size()", "mx.eval"],
        "02-collectives": ["all_sum", "all_gather", "all_max", "all_min", "sum_scatter"],
        "03-point-to-point": ["send(", "recv(", "recv_like(", "new_stream(mx.cpu)"],
        "04-groups": ["split(", "key="],
        "05-data-parallel-training": ["load_digits", "average_gradients", "mx.compile"],
        "06-tensor-parallel": ["AllToShardedLinear", "ShardedToAllLinear", "shard_linear("],
        "07-debugging": ["--no-check", "--timeout", "raises-exception"],
        "08-from-pytorch-and-mpi4py": ["torch.distributed", "mpi4py", "Allreduce"],
        "09-missing-primitives": ["barrier", "broadcast", "scatter", "reduce_to", "all_to_all"],
        "10-how-collectives-are-built": ["ring_steps(", "reduce-scatter", "--bare", "latency"],
        "11-debugging-lab": ["average_gradients", "expect_same(", "all_gather", "--viz"],
    }
    for path in NOTEBOOKS:
        raw = path.read_text()
        for word in taught[path.stem]:
            assert word in raw, f"{path.name} does not mention {word}"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].source.strip() == "%load_ext mxnb"
        assert code[-1].source.strip() == "%mxdist stop"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_current(path):
    """The notebook is stored executed (GitHub shows the lesson), and not stale:
    made from its present code, no output missing, errors only where tagged."""
    stored = nbformat.read(path, as_version=4)
    redo = "re-execute it: .venv/bin/python scripts/execute_notebooks.py " + path.stem
    assert stored.metadata.get("mxnb", {}).get("code") == code_hash(stored), (
        f"{path.name}: its code changed since its outputs were made; {redo}"
    )
    fresh, _ = execute(path)
    pairs = zip(
        [c for c in stored.cells if c.cell_type == "code"],
        [c for c in fresh.cells if c.cell_type == "code"],
        strict=True,
    )
    for i, (old, new) in enumerate(pairs):
        assert old.execution_count is not None, f"{path.name}: code cell {i} never ran; {redo}"
        assert bool(old.outputs) or not new.outputs, f"{path.name}: cell {i} lost its output"
        assert _errored(old) == _tagged(old), f"{path.name}: cell {i} stored an unexpected error"
        pictures = [o for o in old.outputs if "image/png" in o.get("data", {})]
        if "--viz" in old.source:
            assert pictures, f"{path.name}: the --viz cell {i} has no stored picture; {redo}"
    if any("--viz" in c.source for c in stored.cells):
        state = stored.metadata.get("widgets", {})
        assert WIDGET_STATE in state, f"{path.name}: its views' widget state is not stored; {redo}"


def test_pictures_exist_and_are_local():
    """Every image a tutorial shows ships next to it (Binder and CI have no network)."""
    seen = 0
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", cell.source):
                assert "://" not in target, f"{path.name} loads {target} from the network"
                image = NOTEBOOKS_DIR / target
                assert image.is_file(), f"{path.name} shows missing {target}"
                assert image.read_text().lstrip().startswith("<svg"), target
                seen += 1
    assert seen >= 6


def test_getting_started_shows_each_rank():
    assert NOTEBOOKS[0].name == "01-getting-started.ipynb"
    nb, _ = execute(NOTEBOOKS[0])
    outs = [_text(c) for c in nb.cells if c.cell_type == "code"]
    hello = next(o for o in outs if "I am rank" in o)
    for r in range(4):
        assert f"[rank {r}] I am rank {r} of 4; world.size() = 4" in hello
    summed = next(o for o in outs if "sum:" in o)
    for r in range(4):
        assert f"[rank {r}] mine: array([{r + 1}, {r + 1}, {r + 1}]" in summed
    assert "[rank 1] received array([0, 10, 20, 30]" in "".join(outs)
    assert "rank 0 of 1; all_sum gives [1.0, 2.0]" in "".join(outs)
    assert "all checks passed" in "".join(outs)


def _failing_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    failed = [c for c in nb.cells if c.cell_type == "code" and _errored(c)]
    assert len(failed) == 1
    return failed[0]


def test_a_wrong_result_fails_the_plain_checking_cell():
    """Break one number in a tutorial: its checking cell, and so the run, must fail."""
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    for c in nb.cells:  # stored as executed: start from none, as a reader re-running it
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    cell = next(c for c in nb.cells if "x = mx.ones(3) * (rank + 1)" in c.source)
    cell.source = cell.source.replace("* (rank + 1)", "* (rank + 2)")
    before = {p.pid for p in cluster_processes()}
    with pytest.raises(CellExecutionError, match="AssertionError"):
        run(nb)
    failed = _failing_cell(nb)
    assert "import mxnb" in failed.source and "all checks passed" in failed.source
    assert _text(failed) == ""  # it stopped at the assertion, before printing
    assert not _left(before)


def test_a_wrong_result_fails_an_asserting_mxdist_cell():
    """An assert that fails on one rank inside %%mxdist fails the cell, naming the rank."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext mxnb"),
        nbformat.v4.new_code_cell(
            "%%mxdist -n 2\n"
            "total = mx.distributed.all_sum(mx.array(rank))\n"
            "assert total.item() == 1 + rank, f'rank {rank} got {total.item()}'"
        ),
        nbformat.v4.new_code_cell("%mxdist stop"),
    ]
    before = {p.pid for p in cluster_processes()}
    with pytest.raises(CellExecutionError, match="rank 1 raised AssertionError"):
        run(nb)
    error = next(o for o in _failing_cell(nb).outputs if o.output_type == "error")
    assert error.ename == "RankError"
    assert "rank 1: AssertionError: rank 1 got 1" in error.evalue
    assert "rank 0:" not in error.evalue
    assert not _left(before)


def test_a_changed_code_cell_makes_the_stored_outputs_stale():
    nb = nbformat.read(NOTEBOOKS[1], as_version=4)
    assert nb.metadata["mxnb"]["code"] == code_hash(nb)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "all_sum" in c.source)
    cell.source += "\n# one more line"
    assert nb.metadata["mxnb"]["code"] != code_hash(nb)
    nb.cells[0].source += " (markdown changes do not matter)"
    cell.source = cell.source.removesuffix("\n# one more line")
    assert nb.metadata["mxnb"]["code"] == code_hash(nb)


SOLUTIONS_DIR = NOTEBOOKS_DIR / "solutions"
SOLUTIONS = sorted(SOLUTIONS_DIR.glob("*.ipynb"))


def test_every_lesson_with_exercises_has_its_solutions_apart():
    """Every lesson ends with exercises; their solutions are kept apart, one notebook each."""
    without = [p.name for p in NOTEBOOKS if "## Exercises" not in p.read_text()]
    assert not without, f"lessons without exercises: {without}"
    assert sorted(p.name for p in SOLUTIONS) == sorted(p.name for p in NOTEBOOKS)
    assert sorted(FIRST_ATTEMPTS) == [p.stem for p in NOTEBOOKS]  # every first attempt is heard


def _checks_said(name: str) -> list[str]:
    nb, _ = execute(NOTEBOOKS_DIR / f"{name}.ipynb")
    checks = [c for c in nb.cells if c.cell_type == "code" and "expect_everywhere(" in c.source]
    for c in checks:  # a check that fails raises NotYet, whose message is the whole story
        assert [o.ename for o in c.outputs if o.output_type == "error"] == ["NotYet"]
    return ["\n".join(o.evalue for o in c.outputs if o.output_type == "error") for c in checks]


#: Each lesson's exercise checks, in order, and what each says to the first attempt.
FIRST_ATTEMPTS = {
    "01-getting-started": ["rank 0 holds 6 as `mean_rank`: that is the sum of the ranks' numbers"],
    "02-collectives": [
        "as `global_mean`: that is this rank's own mean; combine the ranks",
        "as `owner`: every rank names itself; first find the largest value",
    ],
    "03-point-to-point": ["as `from_right`: that came from the left neighbour; send to the left"],
    "04-groups": ["as `col_sum`: that is the sum over all four ranks; pass the column group"],
    "05-data-parallel-training": [
        "as `by_hand_flat`: that is this rank's own gradient; all_sum each"
    ],
    "06-tensor-parallel": [
        "as `up_again`: that is only this rank's part of the product: all_sum the parts"
    ],
    "07-debugging": ["rank 0 holds False as `nan_somewhere`: that is only whether this rank's own"],
    "08-from-pytorch-and-mpi4py": [
        "rank 0 holds [1, 10] as `exscan`: that includes this rank's own v"
    ],
    "09-missing-primitives": ["as `from_root_2`: that is every rank's x, one after the other"],
    "10-how-collectives-are-built": [
        "as `my_chunk`: that is the left neighbour's own chunk, passed on without adding"
    ],
    "11-debugging-lab": [
        "rank 3 holds a different `weights` from rank 0's (by up to"
        " ... rank 3 decided alone: take the decision on a value every rank shares"
    ],
}  # fmt: skip


def test_an_unchecked_collective_mismatch_is_named_when_it_times_out() -> None:
    """Lesson 07 runs half the ranks in all_sum and half in all_gather with
    ``--no-check``: the report after the timeout says so, not only rank by rank."""
    nb, _ = execute(NOTEBOOKS_DIR / "07-debugging.ipynb")
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "--no-check --timeout" in c.source
               and "all_gather" in c.source]  # fmt: skip
    said = _text(cell) + "".join(o.get("evalue", "") for o in cell.outputs)
    assert (
        "Likely cause: the ranks of world (ranks 0-3) wait in different calls of collective #1: "
        "ranks 0, 2 in all_sum of float32[4]; ranks 1, 3 in all_gather of float32[4]."
    ) in said, said


@pytest.mark.parametrize("lesson", sorted(FIRST_ATTEMPTS))
def test_a_first_attempt_is_told_what_is_wrong(lesson: str) -> None:
    """The exercises start wrong on purpose; their checks say why, in words."""
    said = _checks_said(lesson)
    assert len(said) == len(FIRST_ATTEMPTS[lesson]), said
    for text, wanted in zip(said, FIRST_ATTEMPTS[lesson], strict=True):
        for part in wanted.split(" ... "):
            assert part in text, (part, text)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_the_teachers_solutions_pass_their_checks(path):
    before = {p.pid for p in cluster_processes()}
    nb = run(nbformat.read(path, as_version=4), cwd=SOLUTIONS_DIR)
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "is right on all 4 ranks" in text
    assert "all checks passed" in text
    assert not _left(before)
