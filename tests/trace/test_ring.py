"""The ring replay: the textbook algorithm on recorded inputs ends where the op does."""

from __future__ import annotations

import numpy as np
import pytest

import mxnb
from mxnb.trace import Trace
from mxnb.trace.ring import HONESTY, replay
from trace_reports import op, report


def step_of(name, ins):
    n = len(ins)
    outs = {"all_sum": [sum(ins)] * n, "all_gather": [np.concatenate(ins)] * n}[name]
    return Trace([report(r, [op(1, name, r, ins[r], outs[r], n=n)], n=n) for r in range(n)]).steps[
        0
    ]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_all_sum_ends_with_the_sum_on_every_rank(n):
    ins = [np.arange(10, dtype=np.float32) * (r + 1) for r in range(n)]
    ring = replay(step_of("all_sum", ins))
    assert ring is not None
    assert [(r.phase, r.number) for r in ring.rounds] == (
        [("reduce-scatter", k) for k in range(1, n)] + [("all-gather", k) for k in range(1, n)]
    )
    for r in range(n):
        np.testing.assert_array_equal(ring.result(r), sum(ins))
    # after reduce-scatter, rank i holds the complete chunk i + 1
    chunks = np.array_split(sum(ins), n)
    middle = ring.rounds[n - 2].after
    for i in range(n):
        np.testing.assert_array_equal(middle[i][(i + 1) % n], chunks[(i + 1) % n])
    first = ring.rounds[0].passes
    assert [(p.src, p.dst, p.chunk) for p in first] == [(i, (i + 1) % n, i) for i in range(n)]
    np.testing.assert_array_equal(first[0].values, np.array_split(ins[0], n)[0])


def test_ring_all_gather_passes_blocks_round_the_ring():
    ins = [np.full((2, 3), r, np.float32) for r in range(4)]
    ring = replay(step_of("all_gather", ins))
    assert ring is not None and len(ring.rounds) == 3
    for r in range(4):
        np.testing.assert_array_equal(ring.result(r), np.concatenate(ins).ravel())
    text = ring.text()
    assert text.startswith(f"all_gather on a ring of 4 ranks: {HONESTY}")
    assert "all-gather round 1 of 3:" in text
    assert "  rank 3 -> rank 0: chunk 3 [3 3 3 3 3 3]; rank 0 keeps it" in text


def test_no_replay_without_exact_inputs_or_for_other_ops():
    ins = [np.ones(3, np.float32)] * 2
    assert replay(step_of("all_sum", ins)) is not None
    t = Trace([report(r, [op(1, "all_max", r, ins[r], ins[r])]) for r in range(2)])
    assert replay(t.steps[0]) is None
    with pytest.raises(ValueError, match="the replay covers all_sum and all_gather"):
        t.ring(1)


@pytest.mark.cluster
def test_the_replay_ends_where_the_real_all_sum_did(run, nranks):
    run(
        "x = mx.arange(7, dtype=mx.float32) * (rank + 1) - 3\n"
        "y = mx.distributed.all_sum(x)\n"
        "mx.eval(y)\n"
    )
    t = mxnb.last_trace()
    ring = t.ring(1)
    for r in range(nranks):
        np.testing.assert_allclose(ring.result(r), t.value(1, r, "after").ravel(), rtol=1e-6)
