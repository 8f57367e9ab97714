"""The timeline model: columns, lane states and folded loops, from hand-made reports."""

from __future__ import annotations

import numpy as np

from mxnb.trace import Trace
from mxnb.trace.view import trace_view
from trace_reports import op, report

X = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(4)]
SUM = sum(X)


def loop(n: int, bad_at: int | None = None, ranks: int = 4) -> Trace:
    """``n`` all_sums from one line; at ``bad_at`` rank 3 gets a wrong result."""
    reps = []
    for r in range(ranks):
        ops = [op(1, "all_gather", r, X[r], np.concatenate(X[:ranks]), n=ranks, line=1)]
        for k in range(n):
            y = SUM + 1 if (k == bad_at and r == 3) else SUM
            ops.append(op(2 + k, "all_sum", r, X[r], y, n=ranks, line=3, code="y = all_sum(x)"))
        reps.append(report(r, ops, n=ranks))
    return Trace(reps)


def test_a_loop_folds_into_one_column_with_its_count():
    view = trace_view(loop(50))
    tl = view.timeline
    assert len(tl.columns) == 51
    assert [(f.first, f.period, f.times) for f in tl.folds] == [(1, 1, 50)]
    assert [c for c, _ in tl.shown()] == [0, 1]  # the gather, then the loop once
    text = view.text()
    assert "... the same 1 op ran 49 more times (#3-#51), each time: ok" in text
    assert text.count("all_sum on world") == 1


def test_the_iteration_that_went_wrong_breaks_out_of_the_fold():
    view = trace_view(loop(50, bad_at=20))
    tl = view.timeline
    folds = [(f.first, f.period, f.times) for f in tl.folds]
    assert folds == [(1, 1, 20), (22, 1, 29)]
    bad = tl.columns[21]
    assert bad.state == "wrong" and dict(bad.cells)[3] == "wrong" and dict(bad.cells)[0] == "ok"
    assert "!! rank 3 holds a wrong result after all_sum" in view.text()


def test_two_identical_ops_are_not_folded():
    assert trace_view(loop(2)).timeline.folds == []


def test_a_loop_body_of_several_ops_folds_as_a_whole():
    reps = []
    for r in range(2):
        ops = []
        for k in range(10):
            ops.append(op(2 * k + 1, "all_sum", r, X[r], X[0] + X[1], line=2))
            ops.append(op(2 * k + 2, "all_max", r, X[r], X[1], line=3))
        reps.append(report(r, ops))
    tl = trace_view(Trace(reps)).timeline
    assert [(f.first, f.period, f.times) for f in tl.folds] == [(0, 2, 10)]


def test_the_same_op_on_disjoint_subgroups_is_one_column_with_one_name():
    groups = {"split #1 color 0": [0, 2], "split #1 color 1": [1, 3]}
    reps = []
    for r in range(4):
        label = f"split #1 color {r % 2}"
        mates = groups[label]
        y = X[mates[0]] + X[mates[1]]
        ops = [op(1, "all_sum", r, X[r], y, n=2, group=label, group_rank=mates.index(r), line=4)]
        reps.append(report(r, ops, n=4, groups={label: mates}))
    view = trace_view(Trace(reps))
    (col,) = view.timeline.columns
    assert col.name == "all_sum on 2 groups of split #1" and len(col.steps) == 2
    assert dict(col.cells) == {0: "ok", 1: "ok", 2: "ok", 3: "ok"}


def test_lane_states_say_who_never_called_and_who_was_in_flight():
    reps = [
        report(0, [op(1, "all_sum", 0, X[0], None, states={"after": "in_flight"})]),
        report(1, []),
    ]
    view = trace_view(Trace(reps))
    assert view.steps[0].lanes == {0: "in_flight", 1: "missing"}
    assert view.timeline.columns[0].state == "in_flight"


def test_a_send_without_its_recv_marks_both_lanes():
    reps = [report(0, [op(1, "send", 0, X[0], X[0], peer=1, line=2)]), report(1, [])]
    step = trace_view(Trace(reps)).steps[0]
    assert step.lanes == {0: "mismatched", 1: "missing"}


def test_a_scatter_is_a_column_per_message_each_with_its_arrow():
    """Rank 0 sends one row to each other rank (three send calls, one recv call
    per rank): one transfer step per message, in the order rank 0 sent them."""
    row = np.arange(2, dtype=np.float32)
    reps = [report(0, [op(k, "send", 0, row, row, n=4, peer=k, line=3) for k in (1, 2, 3)], n=4)]
    reps += [
        report(r, [op(1, "recv", r, None, row, n=4, peer=0, line=5)
                   | {"states": {"before": "none", "after": "ok"}}], n=4)
        for r in (1, 2, 3)
    ]  # fmt: skip
    view = trace_view(Trace(reps))
    assert [s.op for s in view.steps] == ["send/recv"] * 3
    assert [c.arrows for c in view.timeline.columns] == [((0, k, True),) for k in (1, 2, 3)]
    assert [sorted(s.lanes) for s in view.steps] == [[0, k] for k in (1, 2, 3)]
    assert {st for s in view.steps for st in s.lanes.values()} == {"ok"}
    assert view.timeline.folds == []  # three different messages, not a loop of one


def test_steps_are_ordered_as_each_rank_called_them_ties_by_earliest_call():
    """The merge's ordering against its plain form (at each pick, scan every
    step left for those whose predecessors are all placed, take the one called
    earliest; none ready: a cycle, broken at the earliest call), on random
    call orders, including ones that contradict each other."""
    import itertools
    import random

    from mxnb.trace.merge import _topological

    def plain(keys, order, first):
        after, count = {k: set() for k in keys}, dict.fromkeys(keys, 0)
        for seq in order.values():
            for a, b in itertools.pairwise(seq):
                if a != b and b not in after[a]:
                    after[a].add(b)
                    count[b] += 1
        out, left = [], set(keys)
        while left:
            k = min([k for k in left if count[k] == 0] or left, key=lambda k: first[k])
            out.append(k)
            left.discard(k)
            for b in after[k]:
                count[b] -= 1
        return out

    rng = random.Random(7)
    for _ in range(300):
        keys = [("s", i) for i in range(rng.randint(1, 8))]
        order = {r: rng.sample(keys, rng.randint(1, len(keys))) for r in range(rng.randint(1, 4))}
        first = {}
        for r, seq in order.items():
            for pos, k in enumerate(seq):
                first[k] = min(first.get(k, (pos, r)), (pos, r))
        for i, k in enumerate(keys):
            first.setdefault(k, (99, 99 + i))
        assert _topological(keys, order, first) == plain(keys, order, first)
