"""One view-model: the summary, the widget's state and the picture say the same thing."""

from __future__ import annotations

import numpy as np

from mxnb.trace import Trace
from mxnb.trace.view import trace_view
from mxnb.views.picture import render
from mxnb.views.widget import widget_state
from trace_reports import op, report

X = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(3)]
GOOD = X[0] + X[1] + X[2]
BAD = np.array([0, 3, 99, 9], np.float32)


def disagreeing() -> Trace:
    """Three ranks sum; rank 2 ends with something else, and its op 2 was never evaluated."""
    code = "y = mx.distributed.all_sum(x)"
    return Trace(
        [
            report(r, [
                op(1, "all_sum", r, X[r], BAD if r == 2 else GOOD, n=3, line=2, code=code),
                op(2, "all_max", r, X[r], GOOD, n=3, line=3, states={"after": "lazy"}),
            ], n=3)
            for r in range(3)
        ]
    )  # fmt: skip


def test_the_summary_is_the_view_models_text():
    t = disagreeing()
    view = trace_view(t)
    assert t.text() == view.text()
    text = view.text()
    assert "!! rank 2 holds a wrong result after all_sum: expected the sum of" in text
    assert "[0 3 99 9] (expected [0 6 12 18])" in text  # the wrong one, and the right one
    assert view.steps[0].mismatch == [2] and view.steps[1].panels[0].timed is False


def test_the_widget_ships_the_view_models_words_and_values():
    view = trace_view(disagreeing())
    state = widget_state(view)
    # enough of the summary to recognise its output, not a second copy of it
    text = view.text().strip()
    assert state["summary_len"] == len(text)
    assert state["summary_ends"] == [text[:200], text[-200:]]
    for s, sv in zip(state["steps"], view.steps, strict=True):
        assert (s["group_text"], s["site"], s["mismatch_text"]) == (
            sv.group_text, sv.site_text, sv.mismatch_text,
        )  # fmt: skip
        for panel, r in zip(s["panels"], view.ranks, strict=True):
            after = sv.panels[r].after
            if after.snap is not None:
                assert panel["after"] is after.snap  # the same bytes, not a copy
                assert "after_state" not in panel  # the front end writes the values
            else:  # its state, which the front end words as the summary does
                assert state["words"]["states"][panel["after_state"]] == after.text
    assert state["steps"][1]["panels"][0]["after_state"] == "lazy"


def test_the_picture_draws_the_view_model():
    t = disagreeing()
    from_trace, _ = render(t)
    from_view, layout = render(trace_view(t))
    assert np.array_equal(np.asarray(from_trace), np.asarray(from_view))
    assert set(layout.ops) == {1, 2}


def test_ranks_on_several_hosts_are_placed_in_every_view():
    """Where the ranks ran is said once, in the headline every view starts with, and
    the widget puts each host under its rank; on one host nothing is added."""
    code = "y = mx.distributed.all_sum(x)"
    reports = [
        {**report(r, [op(1, "all_sum", r, X[r], GOOD, n=3, code=code)], n=3),
         "host": "node1" if r < 2 else "node2"}
        for r in range(3)
    ]  # fmt: skip
    view = trace_view(Trace(reports))
    assert (
        view.headline
        == "mxnb trace: 1 op on ranks 0-2, on 2 hosts: node1 (ranks 0, 1), node2 (rank 2)"
    )
    assert view.text().startswith(view.headline)
    assert widget_state(view)["hosts"] == ["node1", "node1", "node2"]
    one = trace_view(Trace([{**rep, "host": "vm"} for rep in reports]))
    assert one.headline == "mxnb trace: 1 op on ranks 0-2" and one.hosts == {}
    assert widget_state(one)["hosts"] == ["", "", ""]


def test_a_step_whose_ranks_called_different_collectives_names_them():
    """Ranks 0, 2 call all_sum where ranks 1, 3 call all_gather; mxnb's check
    refused it everywhere.  The title, the column and the note name both ops."""
    x = np.ones(4, np.float32)
    refused = {"states": {"after": "refused"}, "eval_s": None, "note": "refused"}
    reps = [
        report(r, [op(1, "all_sum" if r % 2 == 0 else "all_gather", r, x, x, n=4, **refused)], n=4)
        for r in range(4)
    ]
    view = trace_view(Trace(reps))
    (step,) = view.steps
    note = "ops differ: ranks 0, 2 called all_sum; ranks 1, 3 called all_gather"
    assert step.inputs_note == note
    assert f"!! {note}" in view.text()
    assert step.lanes == dict.fromkeys(range(4), "mismatched")
    assert (step.name, step.head) == ("all_sum / all_gather", "sum/gather")
    assert view.text().splitlines()[1].startswith("#1 all_sum / all_gather on world")
    shown = widget_state(view)["steps"][0]
    assert (shown["name"], shown["head"]) == ("all_sum / all_gather", "sum/gather")
    same = [report(r, [op(1, "all_sum", r, x, 4 * x, n=4)], n=4) for r in range(4)]
    one = trace_view(Trace(same))
    assert (one.steps[0].name, one.steps[0].head) == ("all_sum", "sum")


def test_why_a_rank_has_no_row_is_one_of_three_words_for_every_view():
    from mxnb.trace.text import ABSENT_TEXT, TAG_TEXT, tag_text

    x = np.ones(2, np.float32)
    reps = [report(r, [op(1, "all_sum", r, x, 3 * x, n=4, line=2),
                       *([op(2, "send", 0, x, x, n=4, peer=1, line=3)] if r == 0 else []),
                       *([op(2, "recv", 1, None, x, n=4, peer=0, line=4)] if r == 1 else [])],
                  n=4)
            for r in range(3)]  # fmt: skip
    reps.append(report(3, [], n=4))  # rank 3 skipped the all_sum
    summed, sent = trace_view(Trace(reps)).steps
    assert [summed.absence(3), sent.absence(2)] == ["missing", "apart"]
    assert ABSENT_TEXT["missing"] == "never called this op (it stopped or skipped it)"
    words = widget_state(trace_view(Trace(reps)))["words"]
    assert words["absent"] == ABSENT_TEXT
    assert words["tags"] == TAG_TEXT
    assert tag_text("sum_rows", first=2, last=3) == "rows 2-3 of the sum"
