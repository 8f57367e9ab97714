"""The recorder inside one process (a group of size 1): the laziness rule and the limits."""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np
import pytest

from mxnb.engine import hooks, session
from mxnb.engine import trace as rec_mod


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(session, "_world", mx.distributed.init())
    hooks.install()
    rec = rec_mod.Recorder()
    hooks.add_observer(rec)
    rec.start_cell()
    yield rec
    hooks.remove_observer(rec)
    hooks.uninstall()


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


def test_unevaluated_arrays_are_left_alone(recorder):
    x = mx.ones(3) * 5
    y = mx.distributed.all_sum(x)
    (r,) = finish(recorder)
    assert r.states["before"] == "lazy"
    assert "before" not in r.meta
    assert not rec_mod.is_evaluated(x)  # recording did not evaluate it
    if y is not x:
        assert not rec_mod.is_evaluated(y)


def test_recv_has_no_input_and_recv_like_only_a_template(recorder):
    call = hooks.OpCall("recv", ((2,), mx.float32, 0), {}, seq=1)
    call.result = mx.zeros((2,))
    recorder.before(call)
    recorder.after(call)
    like = hooks.OpCall("recv_like", (mx.zeros((3,)), 0), {}, seq=2)
    like.result = mx.zeros((3,))
    recorder.before(like)
    recorder.after(like)
    a, b = finish(recorder)
    assert a.meta["in"] is None and a.states["before"] == "none" and a.meta["peer"] == 0
    assert b.meta["in"] == {"shape": [3], "dtype": "float32"} and b.states["before"] == "template"


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
    mx.eval(mx.distributed.all_sum(x))
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
    assert recorder.finished is None and recorder.records == []


def test_unknown_graph_format_means_no_values(monkeypatch):
    """If MLX ever writes its graph differently, nothing is read (or run)."""
    x = mx.ones(2)
    mx.eval(x)
    monkeypatch.setattr(rec_mod, "_dot_understood", False)
    assert not rec_mod.is_evaluated(x)
