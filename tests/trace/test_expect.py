"""Expected results, recomputed from the recorded inputs: a rank is judged, not outvoted."""

from __future__ import annotations

import numpy as np

from mxnb.trace import Trace
from trace_reports import op, report


def one_op(name, ins, outs, states=None):
    n = len(ins)
    return Trace([
        report(r, [op(1, name, r, ins[r], outs[r], n=n, line=2, code=f"y = {name}(x)",
                      states=states)], n=n)
        for r in range(n)
    ]).steps[0]  # fmt: skip


def test_three_ranks_agreeing_on_a_wrong_sum_are_all_marked():
    ins = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(4)]
    wrong = np.arange(4, dtype=np.float32) * 6  # what ranks 0-2 got with rank 3's garbage
    step = one_op("all_sum", ins, [wrong, wrong, wrong, sum(ins)])
    assert step.mismatch == [0, 1, 2]  # the majority is wrong, rank 3 is right
    np.testing.assert_array_equal(step.expected.values[0], sum(ins))
    assert step.mismatch_text().startswith("ranks 0-2 hold a wrong result after all_sum")


def test_integer_sums_wrap_around_as_mpi_does():
    big = np.array([2**31 - 1], np.int32)
    wrapped = np.array([-2], np.int32)
    step = one_op("all_sum", [big, big], [wrapped, wrapped])
    assert step.mismatch == []


def test_float_sums_that_cancel_allow_rounding():
    a = np.array([1e8, 1.0], np.float32)
    step = one_op("all_sum", [a, -a], [np.array([0, 0], np.float32)] * 2)
    assert step.mismatch == []


def test_max_min_gather_and_scatter():
    ins = [np.array([1, 5], np.float32), np.array([4, 2], np.float32)]
    assert one_op("all_max", ins, [np.array([4, 5], np.float32)] * 2).mismatch == []
    assert one_op("all_min", ins, [np.array([4, 5], np.float32)] * 2).mismatch == [0, 1]
    gathered = np.array([1, 5, 4, 2], np.float32)
    assert one_op("all_gather", ins, [gathered, gathered]).mismatch == []
    step = one_op("sum_scatter", ins, [np.array([5], np.float32), np.array([7], np.float32)])
    assert step.mismatch == []
    np.testing.assert_array_equal(step.expected.values[1], [7])


def test_without_exact_inputs_no_rank_is_taken_to_be_right():
    ins = [np.ones(3, np.float32)] * 3
    outs = [np.full(3, 3, np.float32)] * 2 + [np.full(3, 9, np.float32)]
    step = one_op("all_sum", ins, outs, states={"before": "released"})
    assert step.expected is None
    assert step.mismatch == [0, 1, 2]
    assert "mxnb cannot tell which is right" in step.mismatch_text()
