"""Where a dead rank was, from its fatal-error report (no cluster)."""

from __future__ import annotations

from mxnb.kernel.lastwords import LastWords, last_words

CELL = "# In[5]: %%mxdist\nimport ctypes\nif rank == 1:\n    ctypes.string_at(0)\nmx.eval(y)\n"


def stack(pid: int, *frames: str, current: bool = True) -> str:
    head = "Current thread" if current else "Thread"
    return f"{head} 0x00007f00 (most recent call first):\n" + "".join(
        f'  File "{f}\n' for f in frames
    )


IN_CELL = '/tmp/ipykernel_{pid}/123.py", line {line} in <module>'
EVAL = '/opt/mxnb/mxnb/rank/entries.py", line 126 in entry'


def test_the_line_of_the_cell_and_whether_it_was_evaluating():
    report = "Fatal Python error: Aborted\n\n" + stack(7, EVAL, IN_CELL.format(pid=7, line=5))
    words = last_words(report, CELL)
    assert words == LastWords(5, "mx.eval(y)", True, "")
    assert words.sentence() == " at line 5 (mx.eval(y)), while evaluating"


def test_a_fault_in_the_cells_own_code_is_not_an_evaluation():
    report = stack(7, IN_CELL.format(pid=7, line=4))
    words = last_words(report, CELL)
    assert words is not None and not words.evaluating
    assert words.sentence() == " at line 4 (ctypes.string_at(0))"


def test_in_mpiexecs_output_the_dead_process_is_picked_by_its_pid():
    output = (
        stack(7, EVAL, IN_CELL.format(pid=7, line=5), current=False)
        + "double free or corruption (!prev)\nFatal Python error: Aborted\n"
        + stack(8, IN_CELL.format(pid=8, line=4))
    )
    words = last_words(output, CELL, pid=8)
    assert words == LastWords(4, "ctypes.string_at(0)", False, "double free or corruption (!prev)")
    assert last_words(output, CELL, pid=9) is None


def test_what_a_dying_process_said_and_whether_it_is_an_overrun():
    said = "[vm:00000] *** MPI_ERR_TRUNCATE: message truncated"
    words = last_words(stack(7, EVAL, IN_CELL.format(pid=7, line=5)), CELL, output=said)
    assert words is not None and words.said == "MPI_ERR_TRUNCATE: message truncated"
    assert words.overrun
    assert not LastWords(5, "", True, "terminate called after throwing").overrun


def test_no_stack_no_words():
    assert last_words("Fatal Python error: Aborted\n", CELL) is None
    assert LastWords(None, "", False, "").sentence() == ""
