"""Rendering of rank output, results and errors, against expected text."""

from __future__ import annotations

import io

from mxnb.errors import RankError
from mxnb.kernel.runner import CellResult, RankOutcome, RankStreamer
from mxnb.views.outcome import RankResults, strip_ansi


def test_streamer_prefixes_whole_lines_and_holds_partials():
    out = io.StringIO()
    s = RankStreamer([0, 1], out=out, err=out, hold=0)
    s.feed(0, "stdout", "hel")
    s.feed(1, "stdout", "one\ntw")
    s.feed(0, "stdout", "hello\nwor")
    s.feed(1, "stdout", "one\ntwo\n", final=True)
    s.feed(0, "stdout", "hello\nworld", final=True)
    assert out.getvalue() == ("[rank 1] one\n[rank 0] hello\n[rank 1] two\n[rank 0] world\n")


def test_results_text_indents_multiline_reprs():
    res = RankResults(
        [
            RankOutcome(0, result={"text/plain": "array([[1, 2],\n       [3, 4]])"}),
            RankOutcome(1, result=None),
            RankOutcome(2, result={"text/plain": "7"}),
        ]
    )
    assert res.text() == (
        "Out[rank 0]: array([[1, 2],\n                    [3, 4]])\nOut[rank 2]: 7"
    )


def _err(name: str, value: str, tb: list[str]) -> dict:
    return {"ename": name, "evalue": value, "traceback": tb}


def test_rank_error_groups_identical_tracebacks():
    tb = ["\x1b[31mTraceback\x1b[39m", "NameError: name 'q' is not defined"]
    result = CellResult(
        [
            RankOutcome(0, error=_err("NameError", "name 'q' is not defined", tb), done=True),
            RankOutcome(1, error=_err("NameError", "name 'q' is not defined", tb), done=True),
            RankOutcome(2, error=_err("ValueError", "bad", ["ValueError: bad"]), done=True),
            RankOutcome(3, done=True),
        ]
    )
    err = RankError(result)
    assert err.ranks == [0, 1, 2]
    assert str(err) == ("ranks 0, 1: NameError: name 'q' is not defined; rank 2: ValueError: bad")
    assert [strip_ansi(ln) for ln in err._render_traceback_()] == [
        "--- ranks 0, 1 raised NameError ---",
        "Traceback",
        "NameError: name 'q' is not defined",
        "--- rank 2 raised ValueError ---",
        "ValueError: bad",
    ]


def test_streamer_orders_ranks_during_the_hold():
    out = io.StringIO()
    s = RankStreamer([0, 1, 2], out=out, err=out, hold=60)
    s.feed(2, "stdout", "two\n")
    s.feed(0, "stdout", "zero\n")
    s.feed(1, "stdout", "one\n")
    assert out.getvalue() == ""
    s.flush()
    assert out.getvalue() == "[rank 0] zero\n[rank 1] one\n[rank 2] two\n"


def test_user_frames_drop_mxnb_frames_whole():
    from mxnb.views.outcome import user_frames

    lines = [
        "UndefinedOrder      Traceback (most recent call last)",
        "Cell In[8], line 3",
        "----> 3     mx.eval(a, b)",
        "",
        "    [... skipping hidden 2 frame]",
        "",
        "File /site/mxnb/rank/pairing.py:139, in Pairing.check(self)",
        "--> 139     raise UndefinedOrder(order_problem(group))",
        "",
        "File /site/mlx/nn/layers/base.py:12, in Module.f(self)",
        "---> 12     return g()",
        "",
        "UndefinedOrder: recv #1 and #2 from rank 0 are evaluated together",
    ]
    assert user_frames(lines) == lines[:4] + lines[9:]
    as_blocks = ["\n".join(lines[1:4]) + "\n", "\n".join(lines[6:9]), lines[-1]]
    assert "pairing.py" not in "\n".join(user_frames(as_blocks))
