"""Point-to-point checks pair as MLX pairs the data: by evaluation, on real ranks."""

from __future__ import annotations

import time

import pytest

from mxnb.errors import RankError
from mxnb.views.outcome import strip_ansi

pytestmark = pytest.mark.cluster


def failing(run, code, line=""):
    t0 = time.monotonic()
    with pytest.raises(RankError) as info:
        run(code, line)
    return strip_ansi("\n".join(info.value._render_traceback_())), time.monotonic() - t0


#: Rank 0 sends [1,1,1,1] then [2,2,2,2] to rank 1, which receives both in one mx.eval.
TWO_RECVS = (
    "if rank == 0:\n"
    "    mx.eval(mx.distributed.send(mx.full((4,), 1.0), 1))\n"
    "    mx.eval(mx.distributed.send(mx.full((4,), 2.0), 1))\n"
    "elif rank == 1:\n"
    "    a = mx.distributed.recv((4,), mx.float32, 0)\n"
    "    b = mx.distributed.recv((4,), mx.float32, 0)\n"
    "    mx.eval(a, b)\n"
    "    first, second = a.tolist(), b.tolist()\n"
)


def test_two_recvs_from_one_sender_in_one_eval_are_refused(run, nranks, magics):
    text, took = failing(run, TWO_RECVS)
    assert took < 10
    assert "--- rank 1 raised UndefinedOrder ---" in text
    assert "recv #1 and #2 from rank 0 (lines 6, 7) are evaluated together" in text
    assert "Evaluate them one at a time" in text
    run("ok = True")  # the next cell works
    with pytest.raises(Exception, match="first"):
        magics.pull("first", [1])  # no data moved: nothing was received


def test_unchecked_the_swap_goes_through_and_is_marked(run, nranks, magics):
    run(TWO_RECVS, "--no-check")
    (first,) = magics.pull("first", [1])
    (second,) = magics.pull("second", [1])
    assert sorted([first, second]) == [[1.0] * 4, [2.0] * 4]  # in some order, no error
    import mxnb

    trace = mxnb.last_trace()
    transfers = [t for s in trace.steps for t in s.transfers]
    assert len(transfers) == 2
    for t in transfers:
        assert t.note.startswith("order not defined: rank 1 evaluated recv #1 and #2 together")
    assert "order not defined" in trace.text()


def test_an_unevaluated_send_puts_no_later_pair_out_of_step(run, nranks):
    run(
        "if rank == 1:\n"
        "    never = mx.distributed.send(mx.full((4,), 9.0), 0)  # created, never evaluated\n"
        "    mx.eval(mx.distributed.send(mx.full((4,), 2.0), 0))\n"
        "elif rank == 0:\n"
        "    got = mx.distributed.recv((4,), mx.float32, 1)\n"
        "    assert got.tolist() == [2.0] * 4, got\n"
    )


def test_a_recv_inside_an_expression_is_checked_before_data_moves(run, nranks):
    """The recv is only an input of what is evaluated (a pipeline stage)."""
    run(
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(mx.full((4,), 3.0), 1))\n"
        "elif rank == 1:\n"
        "    y = mx.distributed.recv_like(mx.zeros(4), 0) * 2\n"
        "    assert y.tolist() == [6.0] * 4, y\n"
    )
    text, took = failing(
        run,
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(mx.full((4,), 3.0), 1))\n"
        "elif rank == 1:\n"
        "    y = mx.distributed.recv((3,), mx.float32, 0) * 2\n"
        "    mx.eval(y)\n",
    )
    assert took < 10
    assert "rank 0 sends float32[4] to rank 1, rank 1 expects float32[3] from rank 0" in text


def test_a_pipeline_of_sends_and_recvs_keeps_working(run, nranks):
    run(
        "h = mx.full((4,), float(rank))\n"
        "for step in range(5):\n"
        "    if rank > 0:\n"
        "        h = mx.distributed.recv_like(h, rank - 1) + 1\n"
        "    if rank < size - 1:\n"
        "        mx.eval(mx.distributed.send(h, rank + 1))\n"
        "    else:\n"
        "        mx.eval(h)\n"
        "        assert h.tolist() == [float(size - 1)] * 4, h\n"
    )


def test_data_sent_for_an_abandoned_recv_never_lands_in_a_later_one(run, nranks):
    """Rank 1's recv check passes, so rank 0 sends; rank 1 is interrupted before MLX's
    recv runs.  The orphaned message is discarded and said so, not received later."""
    text, took = failing(
        run,
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(mx.full((4,), 1.0), 1))\n"
        "elif rank == 1:\n"
        "    stale = mx.distributed.recv((4,), mx.float32, 0)\n"
        "    mx.eval(stale, mx.distributed.all_sum(mx.ones(2)))  # rank 0 never sums\n",
    )
    assert took < 10
    assert "rank 1 discarded 16 bytes rank 0 had sent" in text
    run(
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(mx.full((4,), 2.0), 1))\n"
        "elif rank == 1:\n"
        "    fresh = mx.distributed.recv((4,), mx.float32, 0)\n"
        "    assert fresh.tolist() == [2.0] * 4, fresh\n"
    )
