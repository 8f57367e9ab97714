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
