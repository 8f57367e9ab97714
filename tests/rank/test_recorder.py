"""The recorder inside one process (a group of size 1): the laziness rule and the limits.

The op log hands the recorder its ops, as on a rank (checks off: a group of one).
"""

from __future__ import annotations

import sys
import time

import mlx.core as mx
import numpy as np
import pytest

from mxnb.rank import entries, evaltime, hooks
from mxnb.rank import recorder as rec_mod
from mxnb.rank.groups import Groups
from mxnb.rank.oplog import OpLog


@pytest.fixture
def oplog(ophooks):
    groups = Groups(mx.distributed.init())
    log = OpLog(ophooks, groups, checked=False)
    log.recorder = rec_mod.Recorder(groups)
    ophooks.set_logger(log)
    log.pre_cell()
    log.recorder.start_cell()
    yield log
    ophooks.set_logger(None)


@pytest.fixture
def recorder(oplog):
    return oplog.recorder


def evaluated(log, arrays, seconds, entry):
    """What an entry point tells the op log around an evaluation, with a chosen time."""
    log.before_eval(arrays, entry)
    log.after_eval(arrays, seconds, entry, None)
    log.in_eval = None


def finish(rec: rec_mod.Recorder) -> list[rec_mod.Record]:
    rec.end_cell()
    assert rec.finished is not None
    recs = rec.finished["records"]
    rec_mod.finish_reads(recs)
    return recs


def test_is_evaluated_does_not_evaluate():
    x = mx.ones(3) * 2
    assert not rec_mod.is_evaluated(x)
    assert not rec_mod.is_evaluated(x)  # asking twice changed nothing
    mx.eval(x)
    assert rec_mod.is_evaluated(x)
    assert rec_mod.is_evaluated(mx.array([1, 2]))


def test_values_of_evaluated_arrays_are_recorded(recorder):
    x = mx.arange(4, dtype=mx.float32)
    mx.eval(x)
    y = mx.distributed.all_gather(x)
    mx.eval(y)
    (r,) = finish(recorder)
    assert r.meta["op"] == "all_gather" and r.meta["group"] == "world"
    assert r.meta["site"]["line"] > 0 and "all_gather(x)" in r.meta["site"]["code"]
    assert r.states == {"before": "ok", "after": "ok"}
    assert r.meta["before"]["data"] == np.arange(4, dtype=np.float64).tobytes()
    assert r.handles == {}  # nothing kept alive after the read


def test_only_arrays_the_cell_still_holds_are_kept(recorder):
    """No reference of mxnb's own: MLX may reuse a dropped result's buffer."""
    x = mx.ones(3)
    mx.eval(x)
    y = mx.distributed.all_sum(x) * 2  # the all_sum result is a temporary
    mx.eval(y)
    (r,) = finish(recorder)
    assert r.states == {"before": "ok", "after": "released"}


def test_keep_holds_every_value(recorder):
    recorder.keep = True
    x = mx.ones(3)
    mx.eval(x)
    y = mx.distributed.all_sum(x) * 2
    mx.eval(y)
    (r,) = finish(recorder)
    assert r.states == {"before": "ok", "after": "ok"}


def test_unevaluated_arrays_are_left_alone(recorder):
    x = mx.ones(3) * 5
    y = mx.distributed.all_sum(x)
    (r,) = finish(recorder)
    assert r.states["before"] == "lazy"
    assert "before" not in r.meta
    assert not rec_mod.is_evaluated(x)  # recording did not evaluate it
    if y is not x:
        assert not rec_mod.is_evaluated(y)


def test_recv_has_no_input_and_recv_like_only_a_template(oplog):
    """Logged by hand: a group of one has no peer to receive from."""
    site = hooks.raw_site(sys._getframe())
    for seq, (name, args, out) in enumerate(
        [("recv", ((2,), mx.float32, 0), mx.zeros((2,))),
         ("recv_like", (mx.zeros((3,)), 0), mx.zeros((3,)))], start=1,
    ):  # fmt: skip
        oplog.logged(oplog.log(name, args, {}, seq, site), out)
    a, b = finish(oplog.recorder)
    assert a.meta["in"] is None and a.states["before"] == "none" and a.meta["peer"] == 0
    assert a.meta["out"] == {"shape": [2], "dtype": "float32"} and a.meta["op"] == "recv"
    assert b.meta["in"] == {"shape": [3], "dtype": "float32"} and b.states["before"] == "template"
    assert b.meta["op"] == "recv_like"


def test_value_limit_keeps_metadata(recorder, monkeypatch):
    monkeypatch.setattr(rec_mod, "MAX_VALUE_OPS", 2)
    x = mx.ones(2)
    mx.eval(x)
    for _ in range(4):
        mx.eval(mx.distributed.all_sum(x))
    recs = finish(recorder)
    assert [r.states["before"] for r in recs] == ["ok", "ok", "limit", "limit"]
    assert all(r.meta["in"] == {"shape": [2], "dtype": "float32"} for r in recs)


def test_record_limit_counts_the_rest(recorder, monkeypatch):
    monkeypatch.setattr(rec_mod, "MAX_RECORDS", 3)
    for _ in range(5):
        mx.distributed.all_sum(mx.ones(1))
    recorder.end_cell()
    assert len(recorder.finished["records"]) == 3 and recorder.finished["dropped"] == 2


def test_reads_that_wait_give_up_at_the_deadline(recorder, monkeypatch):
    """An array whose transfer is still in flight must not block the rank."""
    x = mx.ones(2)
    mx.eval(x)
    y = mx.distributed.all_sum(x)
    mx.eval(y)
    monkeypatch.setattr(rec_mod, "READ_GRACE", 0.3)

    def stuck(_a):
        time.sleep(5)

    monkeypatch.setattr(rec_mod, "memoryview", stuck, raising=False)
    t0 = time.monotonic()
    (r,) = finish(recorder)
    assert time.monotonic() - t0 < 2
    assert r.states == {"before": "in_flight", "after": "in_flight"}


def test_bfloat16_is_read_through_its_bits(recorder):
    x = mx.array([1.5, -2.25, 3.0], dtype=mx.bfloat16)
    mx.eval(x)
    mx.eval(mx.distributed.all_sum(x))
    (r,) = finish(recorder)
    assert r.meta["before"]["dtype"] == "bfloat16"
    assert np.frombuffer(r.meta["before"]["data"], "<f8").tolist() == [1.5, -2.25, 3.0]


def test_new_cell_forgets_the_last(recorder):
    mx.distributed.all_sum(mx.ones(1))
    recorder.end_cell()
    recorder.start_cell()
    assert recorder.finished is None and recorder.ops == []


def test_unknown_graph_format_means_no_values(monkeypatch):
    """If MLX ever writes its graph differently, nothing is read (or run)."""
    x = mx.ones(2)
    mx.eval(x)
    monkeypatch.setattr(rec_mod._DotFormat, "understood", False)
    assert not rec_mod.is_evaluated(x)


# -- evaluation time (the listener is called by hand: no rank entry points here) --


def meta_of(recs: list[rec_mod.Record], op: str) -> dict:
    (m,) = [r.meta for r in recs if r.meta["op"] == op]
    return m


def test_evaluation_time_goes_to_the_ops_whose_results_were_evaluated(recorder, oplog):
    x = mx.ones(3) * 2
    a = mx.distributed.all_sum(x)
    b = mx.distributed.all_max(x)
    other = mx.ones(2) + 1
    mx.eval(a, b, other)
    evaluated(oplog, [a, b, other], 0.25, "mx.eval")
    print(a)  # already computed: must not be timed again
    evaluated(oplog, [a], 0.001, "__repr__")
    recs = finish(recorder)
    for op in ("all_sum", "all_max"):
        m = meta_of(recs, op)
        assert m["eval_s"] == 0.25 and m["eval_by"] == "mx.eval" and m["eval_note"] is None
        assert (m["eval_ops"], m["eval_arrays"]) == (2, 3)
        assert 0 <= m["call_s"] < 0.25 and "duration" not in m


def test_an_op_evaluated_inside_a_larger_expression_is_not_timed(recorder, oplog):
    y = mx.distributed.all_sum(mx.ones(3) * 2)
    z = y * 2 + 1
    mx.eval(z)
    evaluated(oplog, [z], 0.3, "mx.eval")
    # a later, cheap evaluation of y itself is not credited with the transfer
    mx.eval(y)
    evaluated(oplog, [y], 0.0001, "mx.eval")
    m = meta_of(finish(recorder), "all_sum")
    assert m["eval_s"] is None and m["eval_note"] == "indirect"


def test_async_and_never_evaluated_ops_say_so(recorder, oplog):
    started = mx.distributed.all_sum(mx.ones(2) * 3)
    mx.async_eval(started)
    evaluated(oplog, [started], 0.00001, "mx.async_eval")
    mx.eval(started)
    evaluated(oplog, [started], 0.001, "mx.eval")
    lazy = mx.distributed.all_max(mx.ones(2) * 4)
    recs = finish(recorder)
    assert meta_of(recs, "all_sum")["eval_note"] == "async"
    assert meta_of(recs, "all_sum")["eval_s"] is None
    assert meta_of(recs, "all_max")["eval_note"] == "lazy"
    assert not rec_mod.is_evaluated(lazy)  # timing did not evaluate it


def test_a_recycled_id_is_never_taken_for_a_dead_result(recorder, oplog, monkeypatch):
    """The result dies unevaluated; a new array at the same address is evaluated."""
    monkeypatch.setattr(rec_mod, "MAX_VALUE_OPS", 0)  # no handle keeps it alive
    mx.distributed.all_sum(mx.ones(2) * 5)  # result dropped at once
    (op,) = recorder.ops
    assert list(recorder.timer.pending.values()) == [op]
    (dead,) = oplog.live  # the id the result had
    other = None
    for _ in range(1000):
        candidate = mx.ones(2) * 6
        if id(candidate) == dead:
            other = candidate
            break
        del candidate
    if other is None:
        pytest.skip("CPython did not reuse the address in 1000 tries")
    mx.eval(other)
    evaluated(oplog, [other], 0.5, "mx.eval")
    assert op.timing is None and op.eval_note == "unknown"


def test_only_the_most_recent_untimed_ops_are_followed(recorder, oplog, monkeypatch):
    monkeypatch.setattr(evaltime, "MAX_FOLLOW", 2)
    ys = [mx.distributed.all_sum(mx.ones(1) * i) for i in range(4)]
    w = mx.ones(1) + 1
    mx.eval(w)
    evaluated(oplog, [w], 0.1, "mx.eval")  # evaluates none of ys
    mx.eval(ys)
    evaluated(oplog, ys, 0.2, "mx.eval")
    recs = finish(recorder)
    assert [r.meta["eval_note"] for r in recs] == ["unknown", "unknown", None, None]
    assert [r.meta["eval_s"] for r in recs] == [None, None, 0.2, 0.2]


# -- the seam in mxnb.rank.entries that times evaluations for the recorder --


class Watcher:
    """What an entry point tells, without an op log behind it."""

    in_eval = None
    bare = False
    checked = False

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self.heard: list[tuple] = []

    def sync(self):
        pass  # no op path in C behind it

    def before_eval(self, arrays, entry):
        self.in_eval = (entry, arrays)

    def after_eval(self, arrays, seconds, entry, check_s):
        assert check_s is None  # checks are off: no wait to show apart
        self.heard.append((arrays, seconds, entry))


def test_the_watcher_hears_the_outermost_evaluation_once():
    watcher = Watcher(timed=True)
    seam = entries.EvalEntries(watcher)

    def flat(*a, **k):
        return entries._flatten(a, [])

    inner = seam._entry("item", lambda a: mx.eval(a) or a.item(), lambda a: [a])
    outer = seam._entry("mx.eval", lambda *a: [inner(v) for v in flat(*a)], flat)
    x, y = mx.ones(1) * 3, mx.ones(1) * 4
    outer(x, [y])
    ((arrays, seconds, entry),) = watcher.heard
    assert entry == "mx.eval" and arrays[0] is x and arrays[1] is y and seconds >= 0
    assert watcher.in_eval is None
    watcher.timed = False
    outer(x)
    assert len(watcher.heard) == 1  # not timed: not told after


def test_untimed_evaluations_read_no_clock(monkeypatch):
    """The entry points are on every evaluation: untimed, nothing extra runs."""
    x = mx.ones(2) * 2

    def boom() -> float:
        raise AssertionError("perf_counter read for an untimed evaluation")

    with monkeypatch.context() as m:
        m.setattr(entries.time, "perf_counter", boom)
        seam = entries.EvalEntries(Watcher(timed=False))
        wrapped = seam._entry("mx.eval", mx.eval, lambda *a, **k: list(a))
        wrapped(x)
    assert rec_mod.is_evaluated(x)


@pytest.mark.parametrize("keep", [False, True], ids=["default", "viz"])
def test_a_call_mlx_refuses_is_not_recorded_and_holds_nothing(recorder, keep):
    """The recorder notes the call before MLX runs it (with --viz, taking a handle of
    its own on the input); if MLX raises, nothing stays."""
    import weakref

    recorder.keep = keep
    x = mx.ones(3) * 2
    gone = weakref.ref(x)
    with pytest.raises(TypeError):
        mx.distributed.all_sum(x, no_such_argument=1)
    del x
    assert gone() is None  # no reference of mxnb's own kept the input alive
    assert recorder.ops == [] and recorder.timer.pending == {} and recorder.held == 0
