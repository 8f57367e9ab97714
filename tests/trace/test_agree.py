"""Whether ranks agree: here, on the order they ran a group's collectives in."""

from __future__ import annotations

import numpy as np

from mxnb.trace import Trace
from mxnb.trace.agree import _swapped
from trace_reports import op, report


def test_one_order_everywhere_is_no_swap():
    assert _swapped({0: {1: 1, 2: 2, 3: 3}, 1: {1: 4, 2: 5, 3: 9}}) is None


def test_a_swap_is_found_with_the_ranks_that_differ():
    assert _swapped({0: {1: 1, 2: 2}, 1: {1: 2, 2: 1}}) == (1, 2, 0, 1)
    # rank 2 alone ran #3 before #2
    assert _swapped({0: {1: 1, 2: 2, 3: 3}, 1: {1: 1, 2: 2, 3: 3}, 2: {1: 1, 2: 3, 3: 2}}) == (
        2, 3, 0, 2)  # fmt: skip


def test_ops_run_by_one_evaluation_are_not_ordered():
    """mx.eval(a, b) on one rank, a then b on another: MLX's order inside one
    evaluation is not recorded, so nothing is claimed."""
    assert _swapped({0: {1: 1, 2: 1}, 1: {1: 1, 2: 2}}) is None
    assert _swapped({0: {1: 1, 2: 2}, 1: {1: 3, 2: 3}}) is None


def test_a_swap_between_two_ranks_is_found_when_the_lowest_rank_cannot_say():
    """Rank 0's runs were not known (settled at the end of the cell): ranks 1
    and 2 are still compared with each other."""
    assert _swapped({0: {}, 1: {1: 1, 2: 2}, 2: {1: 2, 2: 1}}) == (1, 2, 1, 2)
    assert _swapped({0: {3: 1}, 1: {1: 1, 2: 2, 3: 3}, 2: {1: 2, 2: 1, 3: 3}}) == (1, 2, 1, 2)


def test_ops_whose_run_is_unknown_are_left_out():
    assert _swapped({0: {1: 1, 2: 2}, 1: {2: 1}}) is None
    assert _swapped({0: {1: 1}}) is None


def test_only_collectives_of_one_group_are_compared():
    """all_sum on world and on a split group: their orders are independent in MPI."""
    x = np.ones(2, np.float32)
    reps = []
    for r in range(2):
        a = op(1, "all_sum", r, x, x * 2, line=2, code="a = all_sum(x)")
        b = op(2, "all_sum", r, x, x, line=3, code="b = all_sum(x, group=alone)",
               group=f"split{r}", group_rank=0, n=1)  # fmt: skip
        a["eval_no"], b["eval_no"] = (1, 2) if r == 0 else (2, 1)
        reps.append(report(r, [a, b], groups={f"split{r}": [r]}))
    trace = Trace(reps)
    assert not any(s.order_note for s in trace.steps)


def test_the_swap_names_both_lines_when_asked():
    x = np.ones(2, np.float32)
    reps = []
    for r in range(2):
        a = op(1, "all_sum", r, x, x * 2, line=2, code="a = all_sum(x)")
        b = op(2, "all_sum", r, x, x * 2, line=3, code="b = all_sum(x)")
        a["eval_no"], b["eval_no"] = (1, 2) if r == 0 else (2, 1)
        reps.append(report(r, [a, b]))
    (swap,) = Trace(reps).swaps
    assert (swap.first.index, swap.second.index, swap.r, swap.q) == (1, 2, 0, 1)
    assert swap.note(sites=True).startswith(
        "ranks 0, 1 ran #1 (line 2: a = all_sum(x)) and #2 (line 3: b = all_sum(x)) in "
        "different orders (rank 0 ran #1 first, rank 1 #2): MPI pairs"
    )
    assert swap.first.order_note == swap.note() and "line" not in swap.note()
