"""The ring algorithm's still picture: dots gather, then spread; the verdict compares with MLX."""

from __future__ import annotations

import numpy as np
import pytest

import mxnb
from mxnb.errors import MxnbError
from mxnb.trace import Trace
from mxnb.views.palette import rank_color
from mxnb.views.ringpic import _stages
from trace_reports import op, report


def trace_of(name: str, ins: list[np.ndarray], outs: list[np.ndarray]) -> Trace:
    n = len(ins)
    return Trace([report(r, [op(1, name, r, ins[r], outs[r], n=n)], n=n) for r in range(n)])


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_reduce_scatter_leaves_one_full_chunk_per_rank_and_all_gather_fills_them_all(n):
    ins = [np.arange(2 * n, dtype=np.float32) + 10 * r for r in range(n)]
    steps = mxnb.ring_steps(trace=trace_of("all_sum", ins, [sum(ins)] * n))
    stages = _stages(steps.replay)
    assert len(stages) == 1 + 2 * (n - 1)
    everyone = list(range(n))
    holders = stages[n - 1].holders  # after the last reduce-scatter round
    for r in range(n):
        full = [k for k, who in enumerate(holders[r]) if who == everyone]
        assert full == [(r + 1) % n]
    last = stages[-1]
    assert all(who == everyone for r in range(n) for who in last.holders[r])
    assert len(last.arrived) == n
    assert all(src == (dst - 1) % n for (dst, _), src in last.arrived.items())


def test_all_gather_starts_with_each_rank_holding_its_own_block_only():
    ins = [np.array([r, -r], np.float32) for r in range(3)]
    t = trace_of("all_gather", ins, [np.concatenate(ins)] * 3)
    first = _stages(mxnb.ring_steps(trace=t).replay)[0]
    assert first.holders == {r: [[r] if k == r else [] for k in range(3)] for r in range(3)}


def test_the_text_reads_round_by_round_and_ends_with_the_verdict():
    ins = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(2)]
    text = repr(mxnb.ring_steps(trace=trace_of("all_sum", ins, [sum(ins)] * 2)))
    said = (
        "reduce-scatter round 1 of 1:\n  rank 0 -> rank 1: chunk 0 [0 1]; rank 1 adds it to its own"
    )
    assert said in text
    assert text.endswith("after the last round every rank holds what MLX's all_sum gave it")


def test_a_rank_whose_result_is_not_the_replays_is_named():
    ins = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(3)]
    wrong = [sum(ins), sum(ins) + 1, sum(ins)]
    steps = mxnb.ring_steps(trace=trace_of("all_sum", ins, wrong))
    assert steps.verdict() == "the replay differs from what MLX gave rank 1"


def test_the_picture_frames_received_chunks_in_their_senders_colours():
    ins = [np.arange(8, dtype=np.float32) + 10 * r for r in range(4)]
    img = np.asarray(mxnb.ring_steps(trace=trace_of("all_sum", ins, [sum(ins)] * 4)).image())
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert all(rank_color(r) in colours for r in range(4))
    assert img.shape[1] > 1000  # four ranks side by side


def test_an_op_without_a_ring_is_refused_with_the_reason():
    ins = [np.ones(3, np.float32)] * 2
    t = trace_of("all_max", ins, ins)
    with pytest.raises(MxnbError, match="no all_sum or all_gather"):
        mxnb.ring_steps(trace=t)
    with pytest.raises(ValueError, match="the replay covers all_sum and all_gather"):
        mxnb.ring_steps(1, trace=t)
