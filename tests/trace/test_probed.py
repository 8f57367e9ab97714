"""A trace built from probe answers, for ranks stopped while blocked in MPI."""

from __future__ import annotations

from mxnb.trace import Trace
from mxnb.trace.probed import reports_from_probes
from mxnb.trace.view import trace_view


def op(seq: int, name: str, peer: int | None, evaluated: bool, line: int) -> dict:
    return {
        "seq": seq, "op": name, "group": "world", "group_ranks": (0, 1), "peer": peer,
        "shape": (4,), "dtype": "float32", "evaluated": evaluated, "check": "ok",
        "site": f"cell In[3], line {line}: code {line}", "stream": "default stream",
    }  # fmt: skip


def test_ops_called_before_the_hang_read_as_lost_and_the_stuck_ones_as_in_flight():
    states = {
        r: {
            "ops": [op(1, "all_sum", None, True, 1), op(2, "send", 1 - r, False, 2),
                    op(3, "recv", 1 - r, False, 3)],
            "in_eval": {"entry": "mx.eval", "site": "", "since": 0.0, "ops": [2, 3]},
            "waiting": None,
        }
        for r in range(2)
    }  # fmt: skip
    view = trace_view(Trace(reports_from_probes(states, 2)))
    assert [s.op for s in view.steps] == ["all_sum", "send/recv"]
    done, stuck = view.steps
    assert done.lanes == {0: "ok", 1: "ok"} and stuck.lanes == {0: "in_flight", 1: "in_flight"}
    assert done.panels[0].after.text == "(lost: the ranks were stopped while blocked in MPI)"
    assert done.panels[0].time_text == "not timed: the ranks were stopped"
    assert done.site_text == "line 1: code 1"


def test_a_rank_that_did_not_answer_has_no_report():
    assert reports_from_probes({0: None}, 2) == []
