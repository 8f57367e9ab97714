"""What a rank tells the kernel about the order it ran a group's collectives in."""

from __future__ import annotations

from mxnb.protocol.messages import in_call_order, run_order_digest


def test_a_rank_in_call_order_says_so_on_its_own():
    assert in_call_order([1, 1, 2, None, 3])
    assert in_call_order([])
    assert not in_call_order([2, None, 1])


def test_one_order_gives_one_digest_whatever_the_evaluations_were_numbered():
    """Rank 0 evaluated other things in between: its numbers differ, its order does not."""
    assert run_order_digest([2, 1, 3]) == run_order_digest([7, 4, 9])
    assert run_order_digest([2, 2, 1]) == run_order_digest([5, 5, 3])


def test_another_order_or_other_ties_or_unknowns_give_another_digest():
    one = run_order_digest([2, 1, 3])
    assert one != run_order_digest([1, 2, 3])
    assert one != run_order_digest([2, 1, 1])  # ties: MLX chose, and nothing is known
    assert one != run_order_digest([2, 1, None])
    assert len(one) == 16
