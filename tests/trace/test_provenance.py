"""Where each value of a result came from, worked out from hand-made reports."""

from __future__ import annotations

import numpy as np

from mxnb.trace import Trace
from mxnb.trace.provenance import provenance
from trace_reports import op, report


def one_step(name: str, xs: list[np.ndarray], ys: list[np.ndarray]) -> Trace:
    n = len(xs)
    return Trace([report(r, [op(1, name, r, xs[r], ys[r], n=n)], n=n) for r in range(n)])


def test_all_gather_blocks_follow_each_ranks_rows():
    xs = [np.zeros((r + 1, 2), np.float32) for r in range(3)]  # 1, 2 and 3 rows
    ys = [np.concatenate(xs)] * 3
    prov = provenance(one_step("all_gather", xs, ys).steps[0])
    assert prov.blocks == [(0, 0, 1), (1, 1, 3), (2, 3, 6)]


def test_a_gathered_scalar_is_one_row():
    xs = [np.array(float(r), np.float32) for r in range(2)]
    prov = provenance(one_step("all_gather", xs, [np.array([0, 1], np.float32)] * 2).steps[0])
    assert prov.blocks == [(0, 0, 1), (1, 1, 2)]


def test_sum_scatter_slices_go_to_the_ranks_in_order():
    xs = [np.arange(8, dtype=np.float32).reshape(4, 2)] * 2
    total = xs[0] * 2
    prov = provenance(one_step("sum_scatter", xs, [total[:2], total[2:]]).steps[0])
    assert prov.blocks == [(0, 0, 2), (1, 2, 4)]


def test_max_and_min_name_the_winning_rank_per_element():
    xs = [np.array([5, 1, 7], np.int32), np.array([2, 9, 7], np.int32)]
    t = one_step("all_max", xs, [np.maximum(*xs)] * 2)
    assert provenance(t.steps[0]).winners == [0, 1, 0]  # a tie goes to the lower rank
    t = one_step("all_min", xs, [np.minimum(*xs)] * 2)
    assert provenance(t.steps[0]).winners == [1, 0, 0]


def test_no_winners_without_exact_inputs():
    big = [np.arange(5000, dtype=np.float32) * r for r in range(2)]
    t = one_step("all_max", big, [big[1]] * 2)
    assert provenance(t.steps[0]) is None
