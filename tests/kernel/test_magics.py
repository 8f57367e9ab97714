"""%%mxdist through an in-process IPython shell on a real cluster."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import mxnb
from mxnb.errors import RankError
from mxnb.protocol.wording import ranks_text
from mxnb.views.outcome import RankResults, strip_ansi

pytestmark = pytest.mark.cluster


def test_output_is_labelled_in_rank_order(run, nranks, capsys):
    run("for i in range(2):\n    print(f'hello {i} from', rank)")
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("[rank ")]
    want = [f"[rank {r}] hello {i} from {r}" for r in range(nranks) for i in range(2)]
    assert sorted(lines) == sorted(want)
    # within a rank, lines keep their order
    for r in range(nranks):
        mine = [ln for ln in lines if ln.startswith(f"[rank {r}]")]
        assert mine == [f"[rank {r}] hello {i} from {r}" for i in range(2)]


def test_partial_lines_are_not_mixed(run, nranks, capsys):
    run("import sys\nsys.stdout.write('a'); sys.stdout.flush(); sys.stdout.write('b\\n')")
    out = capsys.readouterr().out
    for r in range(nranks):
        assert f"[rank {r}] ab\n" in out


def test_stderr_is_labelled(run, nranks, capsys):
    run("import sys\nprint('oops', rank, file=sys.stderr)")
    err = capsys.readouterr().err
    for r in range(nranks):
        assert f"[rank {r}] oops {r}" in err


def test_state_persists_across_cells(run, nranks):
    run("counter = rank * 100")
    run("counter += 1")
    assert mxnb.pull("counter") == [r * 100 + 1 for r in range(nranks)]


def test_last_expression_shown_per_rank(run, nranks):
    res = run("rank * 3")
    assert isinstance(res, RankResults)
    assert res.text().splitlines() == [f"Out[rank {r}]: {3 * r}" for r in range(nranks)]


def test_no_result_returns_none(run):
    assert run("z = 1") is None


def test_exception_names_the_rank(run, nranks):
    bad = nranks - 1
    with pytest.raises(RankError) as info:
        run(f"if rank == {bad}:\n    raise ValueError('bad input on this rank')\nok = True")
    err = info.value
    assert err.ranks == [bad]
    text = strip_ansi("\n".join(err._render_traceback_()))
    assert f"--- rank {bad} raised ValueError ---" in text
    assert "bad input on this rank" in text
    assert "line 3" in text  # as the editor counts: the %%mxdist line is line 1
    assert "ipyparallel" not in text
    assert mxnb.pull("ok", targets=[0]) == [True]


def test_cells_and_lines_are_named_as_the_notebook_shows_them(ip, nranks):
    """The notebook's execution count, and lines counted from the %%mxdist line."""
    for i in range(3):  # the rank's own counter differs from the second cell on
        if i == 2:
            ip.run_line_magic("mxdist", "restart")  # fresh ranks count from 1 again
        res = ip.run_cell(f"%%mxdist -n {nranks}\nx = 1\nraise ValueError('on line 3')")
        err = res.error_in_exec
        assert isinstance(err, RankError)
        text = strip_ansi("\n".join(err._render_traceback_()))
        assert f"Cell In[{res.execution_count}], line 3" in text
        assert "----> 3 raise ValueError('on line 3')" in text
        assert f"      1 # In[{res.execution_count}]: %%mxdist -n {nranks}" in text


def test_tracebacks_show_the_users_frames_only(run, nranks):
    """A refusal raised inside mxnb's wrappers reads as raised by the user's line."""
    with pytest.raises(RankError) as info:
        run("mx.eval(mx.distributed.all_sum(mx.ones(3) > 0))")  # bool: refused
    text = strip_ansi("\n".join(info.value._render_traceback_()))
    assert "UnsupportedReduction" in text and "line 2" in text
    assert "mxnb/rank" not in text and "mxnb/protocol" not in text
    assert "raise UnsupportedReduction" not in text  # the code of mxnb's frame, too
    assert "skipping hidden" not in text


def test_same_error_on_all_ranks_shown_once(run, nranks):
    with pytest.raises(RankError) as info:
        run("undefined_name_xyz")
    text = strip_ansi("\n".join(info.value._render_traceback_()))
    assert text.count("NameError ---") == 1
    everyone = ranks_text(range(nranks))  # "ranks 0, 1" or "ranks 0-3"
    assert f"--- {everyone} raised NameError ---" in text
    assert str(info.value).startswith(f"{everyone}: NameError")


def test_targets_runs_a_subset(run, nranks, capsys):
    run("marker = 'all'")
    run("marker = 'picked'", line="--targets 0,1")
    assert mxnb.pull("marker") == ["picked", "picked"] + ["all"] * (nranks - 2)
    out = capsys.readouterr().out
    assert "restarting" not in out


def test_numpy_and_plain_python_work(run, nranks):
    run("import numpy as np\nv = float(np.linalg.norm(np.ones(4) * rank))")
    assert mxnb.pull("v") == [2.0 * r for r in range(nranks)]


def test_targets_out_of_range_is_usage_error(run, nranks, magics):
    before = magics.cluster
    with pytest.raises(UsageError, match=r"rank 9 is out of range; ranks 0\.\."):
        run("x = 1", line="--targets 0,9")
    assert magics.cluster is before and magics.cluster.running


def test_status_reports_ranks_and_library(ip, nranks, capsys):
    ip.run_line_magic("mxdist", "status")
    out = capsys.readouterr().out
    assert f"{nranks} ranks, backend mpi" in out
    assert "Open MPI" in out and "libmpi" in out
    assert "uptime" in out


def test_no_output_is_lost_when_replies_beat_output(run, nranks, capsys):
    """iopub output can arrive after the execute reply; none may be dropped."""
    for i in range(15):
        run(f"print('cell {i} rank', rank)")
        out = capsys.readouterr().out
        for r in range(nranks):
            assert f"[rank {r}] cell {i} rank {r}" in out, (i, r, out)
