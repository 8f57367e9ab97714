"""Ops inside ``mx.vmap``: checked as the batched op MLX runs.

MLX calls a vmapped function's Python with one example and batches every
primitive afterwards: an all_sum written on ``float32[2]`` reduces
``float32[B, 2]``.  Ranks mapping over different B passed a check of the
``float32[2]`` and MPI reduced arrays of different sizes: a wrong number.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mxnb
from mxnb.errors import RankError
from mxnb.rank.vmapped import VmapHook, batch_size


def test_batch_size_follows_in_axes():
    import mlx.core as mx

    a, b = mx.zeros((3, 5)), mx.zeros((7, 4))
    assert batch_size((a,), 0) == 3
    assert batch_size((a,), 1) == 5
    assert batch_size((a,), -1) == 5
    assert batch_size((a, b), (None, 0)) == 7
    assert batch_size(((a, b),), ((None, 1),)) == 4
    assert batch_size(({"w": a},), ({"w": 1},)) == 5
    assert batch_size((a,), None) is None
    assert batch_size((1.0,), 0) is None  # MLX says what is wrong
    assert batch_size((a, b), (0,)) is None  # not a prefix of the arguments


@pytest.fixture
def hook() -> Iterator[VmapHook]:
    h = VmapHook()
    h.install()
    yield h
    h.uninstall()


def test_the_batch_is_known_only_while_python_runs_inside_vmap(hook):
    import mlx.core as mx

    seen = []

    def f(v):
        seen.append(list(hook.sizes))
        return mx.vmap(lambda w: w * 2)(v) if v.ndim == 2 else v * 2

    out = mx.vmap(f)(mx.ones((3, 4, 2)))
    assert out.shape == (3, 4, 2)
    assert seen == [[3]]
    assert hook.sizes == []
    hook.uninstall()
    assert not hasattr(mx.vmap, "__mxnb_original__")
    hook.install()


@pytest.mark.cluster
def test_ranks_mapping_over_different_batches_are_refused(run, nranks, magics):
    profile = magics.cluster.profile_dir
    run("f = mx.vmap(lambda v: mx.distributed.all_sum(v))\n"
        "same = f(mx.ones((3, 2)) * (rank + 1)).tolist()\n")  # fmt: skip
    total = float(sum(range(1, nranks + 1)))
    assert mxnb.pull("same") == [[[total] * 2] * 3] * nranks
    text = mxnb.last_trace().text()  # the op as MLX ran it: the batch of 3
    assert "rank 0: float32 (3, 2) -> float32 (3, 2): (inside mx.vmap: Python saw" in text
    with pytest.raises(RankError) as info:
        run("out = f(mx.ones((3 + rank, 2)))\nmx.eval(out)\n", "--timeout 30")
    err = str(info.value)
    assert "CommMismatch" in err
    assert "rank 0 has float32[3,2], rank 1 has float32[4,2]" in err
    assert magics.cluster.profile_dir == profile  # nothing ran: the ranks were kept
    run("ok = f(mx.ones((2, 2))).tolist()")
    assert mxnb.pull("ok") == [[[float(nranks)] * 2] * 2] * nranks
