"""Which cells the kernel compares the ranks' run orders after (no cluster)."""

from __future__ import annotations

from mxnb.kernel.runner import RankOutcome
from mxnb.kernel.tracing import _orders_differ


def outcomes(*late: dict[str, str]) -> list[RankOutcome]:
    return [RankOutcome(rank=r, late=dict(said)) for r, said in enumerate(late)]


def test_ranks_in_call_order_are_not_compared():
    assert not _orders_differ(outcomes({}, {}, {}))


def test_every_rank_in_one_other_order_is_not_compared():
    assert not _orders_differ(outcomes({"world": "ab"}, {"world": "ab"}))


def test_ranks_that_said_different_orders_are_compared():
    assert _orders_differ(outcomes({"world": "ab"}, {}))  # one rank in call order
    assert _orders_differ(outcomes({"world": "ab"}, {"world": "cd"}))
    # a split group some ranks are not in: left to the trace to say
    assert _orders_differ(outcomes({"world": "ab", "split #1 color 0": "x"}, {"world": "ab"}))
