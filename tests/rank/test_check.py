"""Checked communication: mismatches become clear errors on every rank involved."""

from __future__ import annotations

import re

import numpy as np
import pytest

import mxnb
from mxnb.errors import RankError, UnsupportedReduction
from mxnb.protocol.ops import DTYPES, ITEMSIZE, Meta
from mxnb.protocol.wording import typed_text
from mxnb.rank import backend, check
from mxnb.rank.groups import GroupInfo as Mirror


class FakeComm:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def Get_rank(self) -> int:
        return self.rank


def test_meta_roundtrip():
    m = Meta("all_gather", 7, (2, 3, 4), "bfloat16")
    assert Meta.decode(m.encode()) == m
    assert typed_text(m.dtype, m.shape) == "bfloat16[2,3,4]"
    scalar = Meta.decode(Meta("all_sum", 1, (), "float32").encode())
    assert typed_text(scalar.dtype, scalar.shape) == "float32[]"


def test_each_dtype_s_item_size_is_numpy_s_and_bfloat16_is_two_bytes():
    # a hang's time allowance counts bytes without importing NumPy (waitfor)
    for dtype, size in ITEMSIZE.items():
        assert size == (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize), dtype
    assert set(ITEMSIZE) == set(DTYPES)


def test_collective_messages():
    world = Mirror("world", (0, 1, 2, 3), _comm=FakeComm(0))
    same = [Meta("all_sum", 1, (4,), "float32")] * 4
    assert check._collective_problem(same, world) is None
    ops = same[:2] + [Meta("all_gather", 1, (4,), "float32")] * 2
    assert check._collective_problem(ops, world) == (
        "collective mismatch on world (ranks 0-3): ranks 0, 1 called all_sum; ranks 2, 3 "
        "called all_gather. Every rank of a group must call the same collectives in the "
        "same order."
    )
    types = [*same[:3], Meta("all_sum", 1, (4,), "int32")]
    assert check._collective_problem(types, world) == (
        "all_sum on world (ranks 0-3): ranks 0-2 have float32[4], rank 3 has int32[4]. "
        "Every rank must pass the same shape and dtype (MPI would return garbage or "
        "abort the job)."
    )


def test_p2p_message_names_both_sides_in_world_ranks():
    sub = Mirror("split #1 color 1", (1, 3), _comm=FakeComm(0))
    mine = Meta("send", 1, (4,), "float32")
    theirs = Meta("recv", 1, (2, 2), "int32")
    assert check._p2p_problem("send", mine, theirs, sub, 1) == (
        "rank 1 sends float32[4] to rank 3, rank 3 expects int32[2,2] from rank 1 on "
        "split #1 color 1 (world ranks 1, 3). Shape and dtype of a send and its recv "
        "must match."
    )
    assert check._p2p_problem("send", mine, Meta("recv", 1, (4,), "float32"), sub, 1) is None


def test_bool_reductions_are_refused_with_a_fix():
    with pytest.raises(UnsupportedReduction, match="aborts the whole MPI job"):
        backend.bool_trap("all_max", "bool")
    with pytest.raises(RuntimeError, match=r"x\.astype\(mx\.int32\)"):
        backend.bool_trap("all_sum", "bool")  # a RuntimeError, as MLX's own errors are
    backend.bool_trap("all_gather", "bool")
    backend.bool_trap("all_sum", "int32")


# -- on a real cluster ------------------------------------------------------

P2P = (
    "if rank == 0:\n"
    "    mx.eval(mx.distributed.send({send}, 1))\n"
    "elif rank == 1:\n"
    "    got = mx.distributed.recv({shape}, {dtype}, 0)\n"
    "    mx.eval(got)\n"
)


def _mismatch(run, code, line=""):
    with pytest.raises(RankError) as info:
        run(code, line)
    return info.value


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("send", "shape", "dtype", "expect"),
    [
        (
            "mx.ones(4)",
            "(2, 2)",
            "mx.int32",
            "rank 0 sends float32[4] to rank 1, rank 1 expects int32[2,2]",
        ),
        (
            "mx.ones(4)",
            "(4,)",
            "mx.int32",
            "rank 0 sends float32[4] to rank 1, rank 1 expects int32[4]",
        ),
        (
            "mx.ones(8)",
            "(4,)",
            "mx.float32",
            "rank 0 sends float32[8] to rank 1, rank 1 expects float32[4]",
        ),
        (
            "mx.ones(2)",
            "(4,)",
            "mx.float32",
            "rank 0 sends float32[2] to rank 1, rank 1 expects float32[4]",
        ),
    ],
    ids=["shape", "same-bytes-dtype", "truncation", "too-few"],
)
def test_p2p_mismatch_raises_on_both_sides(run, nranks, magics, send, shape, dtype, expect):
    profile = magics.cluster.profile_dir
    err = _mismatch(run, P2P.format(send=send, shape=shape, dtype=dtype))
    assert err.ranks == [0, 1]
    assert str(err).count(expect) == 1  # one summary line for both ranks
    assert "CommMismatch" in str(err)
    run("ok = True")  # the MPI job survived: nothing aborted
    assert magics.cluster.profile_dir == profile


@pytest.mark.cluster
def test_collective_size_mismatch_and_bool_trap(run, nranks, magics):
    err = _mismatch(run, "x = mx.ones(rank + 1)\nmx.eval(mx.distributed.all_sum(x))")
    assert err.ranks == list(range(nranks))
    assert "has float32[1]" in str(err) and f"has float32[{nranks}]" in str(err)
    err = _mismatch(run, "mx.eval(mx.distributed.all_max(mx.array([True, False])))")
    assert "all_max on bool arrays aborts the whole MPI job" in str(err)
    run("print(mx.distributed.all_gather(mx.array([True])))")  # gather of bool works


@pytest.mark.cluster
@pytest.mark.parametrize(
    "use",
    ["y = mx.distributed.all_sum(x) / size",  # the sum itself is never handed over
     "y = avg(x)"],  # nor kept: only MLX's graph holds it
    ids=["expression", "returned-from-a-function"],
)  # fmt: skip
def test_a_collective_evaluated_inside_an_expression_is_checked_first(run, nranks, magics, use):
    """The last rank to arrive has the wrong shape; the others evaluate first.
    They must wait in mxnb's check (and refuse), not run MLX's all_reduce."""
    profile = magics.cluster.profile_dir
    last = nranks - 1
    err = _mismatch(
        run,
        "import time\n"
        "def avg(v):\n"
        "    return mx.distributed.all_sum(v) / size\n"
        f"time.sleep(0.3 * (rank == {last}))\n"
        f"x = mx.ones(3 if rank == {last} else 2)\n"
        f"{use}\n"
        "print(y)\n",
    )
    assert err.ranks == list(range(nranks))
    assert str(err).count("CommMismatch") >= 1 and f"rank {last} has float32[3]" in str(err)
    assert "the MPI job was stopped" not in str(err)  # nobody was inside MPI
    run("ok = True")
    assert magics.cluster.profile_dir == profile  # the same ranks, variables kept


@pytest.mark.cluster
def test_an_unrelated_evaluation_does_not_wait_for_a_pending_collective(run, nranks):
    """Rank 0 called all_sum (kept only in a lazy quotient) and then sends to
    rank 1, which calls all_sum only after receiving: waiting for the all_sum's
    check before the send would deadlock a program MLX runs fine."""
    run(
        "x = mx.ones(2)\n"
        "if rank == 0:\n"
        "    a = mx.distributed.all_sum(x) / size\n"
        "    mx.eval(mx.distributed.send(x, 1))\n"
        "elif rank == 1:\n"
        "    mx.eval(mx.distributed.recv_like(x, 0))\n"
        "    a = mx.distributed.all_sum(x) / size\n"
        "else:\n"
        "    a = mx.distributed.all_sum(x) / size\n"
        "mx.eval(a)\n",
        "--timeout 20",
    )
    assert [v.tolist() for v in mxnb.pull("a")] == [[1.0, 1.0]] * nranks


@pytest.mark.cluster
def test_subgroup_mismatch_names_world_ranks(run, nranks):
    err = _mismatch(
        run,
        "sub = world.split(rank % 2)\n"
        "x = mx.ones(2) if rank < 2 else mx.ones(3)\n"
        "mx.eval(mx.distributed.all_sum(x, group=sub))\n"
        if nranks == 4
        else "sub = world.split(0)\n"
        "x = mx.ones(2) if rank == 0 else mx.ones(3)\n"
        "mx.eval(mx.distributed.all_sum(x, group=sub))\n",
    )
    assert re.search(r"split #\d+ color", str(err)) and "world ranks 0" in str(err)


@pytest.mark.cluster
def test_checking_can_be_switched_off(ip, run, nranks, capsys):
    """Off, a same-size dtype mismatch returns MPI's garbage, as FACTS.md says."""
    code = P2P.format(send="mx.ones(4)", shape="(4,)", dtype="mx.int32")
    run(code, "--no-check")
    got = mxnb.pull("got", targets=[1])[0]
    assert got.dtype == np.int32
    assert got.tolist() == [1065353216] * 4  # the bits of float32 1.0
    ip.run_line_magic("mxdist", "--no-check")
    assert "checked communication off" in capsys.readouterr().out
    run(code)
    ip.run_line_magic("mxdist", "--check")
    with pytest.raises(RankError, match="expects int32"):
        run(code)
