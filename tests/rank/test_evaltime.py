"""Which evaluation ran each op, on real ranks: the timings the trace shows."""

from __future__ import annotations

import pytest

import mxnb
from mxnb.rank.evaltime import MAX_FOLLOW

#: More ops built than an evaluation follows up, then evaluated one at a time; then
#: an op whose result only feeds another's, and is run by that one's evaluation.
CELL = f"""
from mxnb.rank.runtime import current as _rt
x = mx.ones(8) * (rank + 1)
mx.eval(x)
ys = [mx.distributed.all_sum(x) for _ in range({MAX_FOLLOW + 8})]
for y in ys:
    mx.eval(y)
inner = mx.distributed.all_sum(x)
outer = mx.distributed.all_max(inner)
mx.eval(outer)
_rt().oplog.sync()
notes = [(r.op, r.eval_note, r.timing is not None) for r in _rt().recorder.ops]
"""


@pytest.mark.parametrize("line", ["--no-check", ""])
def test_ops_evaluated_one_at_a_time_are_each_timed(run, nranks, line):
    """Each ``mx.eval(y)`` runs only y's own op: every one is timed by it, none is
    given up as "unknown", and an op run inside another's evaluation still reads
    "indirect"."""
    run(CELL, line)
    for notes in mxnb.pull("notes"):
        assert notes[:-2] == [("all_sum", None, True)] * (MAX_FOLLOW + 8)
        assert notes[-2:] == [("all_sum", "indirect", False), ("all_max", None, True)]


#: Pairs of ranks (0 and 1, 2 and 3, ...): the first sends expressions not yet
#: evaluated, the second receives; each side builds all its ops, then evaluates
#: them one at a time.  A rank without a partner does nothing.
SENDS = f"""
from mxnb.rank.runtime import current as _rt
n = {MAX_FOLLOW + 8}
x = mx.ones(8) * (rank + 1)
mx.eval(x)
if rank % 2 == 0 and rank + 1 < size:
    ops = [mx.distributed.send(x * 0 + i, rank + 1) for i in range(n)]
elif rank % 2 == 1:
    ops = [mx.distributed.recv_like(x, rank - 1) for _ in range(n)]
else:
    ops = []
for y in ops:
    mx.eval(y)
got = ops[-1].tolist() if rank % 2 == 1 else None
_rt().oplog.sync()
notes = [(r.op, r.eval_note, r.timing is not None) for r in _rt().recorder.ops]
"""


@pytest.mark.parametrize("line", ["--no-check", ""])
def test_sends_of_expressions_evaluated_one_at_a_time_are_each_timed(run, nranks, line):
    """``send(x * 0 + i, peer)`` evaluates a multiply and an add with its send, yet
    runs no other op: each send and each receive is timed by its own evaluation."""
    n = MAX_FOLLOW + 8
    run(SENDS, line)
    notes, got = mxnb.pull("notes"), mxnb.pull("got")
    for rank in range(nranks):
        if rank % 2 == 0 and rank + 1 < nranks:
            assert notes[rank] == [("send", None, True)] * n
        elif rank % 2 == 1:
            assert notes[rank] == [("recv", None, True)] * n
            assert got[rank] == [n - 1.0] * 8
        else:
            assert notes[rank] == []
