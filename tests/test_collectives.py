"""Every MLX distributed op through %%mxdist, checked against NumPy, on 2 and 4 ranks."""

from __future__ import annotations

import numpy as np
import pytest

import mxnb
from collective_cases import EXPECTED, SETUP, inputs

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(("op", "expect"), EXPECTED)
def test_collective_matches_numpy(run, nranks, op, expect):
    run(f"{SETUP}y = mx.distributed.{op}(x)\nmx.eval(y)")
    got = mxnb.pull("y")
    want = expect(inputs(nranks))
    assert len(got) == nranks
    for r, y in enumerate(got):
        np.testing.assert_allclose(y, want, err_msg=f"rank {r}")


def test_world_names(run, nranks):
    run("w_rank, w_size, g_size = rank, size, world.size()")
    assert mxnb.pull("w_rank") == list(range(nranks))
    assert mxnb.pull("w_size") == [nranks] * nranks
    assert mxnb.pull("g_size") == [nranks] * nranks


def test_ring_shift_send_recv(run, nranks):
    """Each rank sends to the next and receives from the previous, without deadlock:
    the receive goes on its own stream, so both transfers progress together."""
    run(
        "nxt, prv = (rank + 1) % size, (rank - 1) % size\n"
        "x = mx.arange(4, dtype=mx.float32) + 10 * rank\n"
        "s = mx.distributed.send(x, nxt)\n"
        "r = mx.distributed.recv((4,), mx.float32, prv, stream=mx.new_stream(mx.cpu))\n"
        "mx.eval(s, r)\n"
    )
    got = mxnb.pull("r")
    for rank, r in enumerate(got):
        prv = (rank - 1) % nranks
        np.testing.assert_array_equal(r, np.arange(4, dtype=np.float32) + 10 * prv)


def test_recv_like_one_way(run, nranks):
    run(
        "x = mx.ones((2, 2), dtype=mx.int32) * 7\n"
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(x, size - 1))\n"
        "elif rank == size - 1:\n"
        "    got = mx.distributed.recv_like(mx.zeros((2, 2), dtype=mx.int32), 0)\n"
        "    mx.eval(got)\n"
        "else:\n"
        "    got = None\n"
        "if rank == 0:\n"
        "    got = None\n"
    )
    got = mxnb.pull("got")
    assert got[nranks - 1].dtype == np.int32
    np.testing.assert_array_equal(got[nranks - 1], np.full((2, 2), 7, np.int32))
    assert all(g is None for g in got[:-1])


def test_split_subgroups(run, nranks):
    """Even and odd ranks form subgroups; all_sum stays inside each."""
    run(
        "sub = world.split(rank % 2)\n"
        "s = mx.distributed.all_sum(mx.array([float(rank)]), group=sub)\n"
        "mx.eval(s)\n"
        "sub_size, sub_rank = sub.size(), sub.rank()\n"
        "del sub\n"
    )
    sums = [float(v[0]) for v in mxnb.pull("s")]
    sizes = mxnb.pull("sub_size")
    sub_ranks = mxnb.pull("sub_rank")
    for r in range(nranks):
        same = [q for q in range(nranks) if q % 2 == r % 2]
        assert sums[r] == float(sum(same)), f"rank {r}"
        assert sizes[r] == len(same)
        assert sub_ranks[r] == same.index(r)
