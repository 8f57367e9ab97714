"""The per-rank op log: it costs little and keeps nothing alive.

A training loop calls collectives thousands of times in one cell; the log
behind hang reports must not hold those results or grow without bound.
"""

from __future__ import annotations

import pytest

import mxnb
from mxnb.rank import oplog as monitor

pytestmark = pytest.mark.cluster

KEEPS_NOTHING = (
    "import gc, weakref\n"
    "refs = []\n"
    "for i in range(20):\n"
    "    y = mx.distributed.all_sum(mx.ones(1024) * i)\n"
    "    s = mx.distributed.send(mx.ones(4), (rank + 1) % size)\n"
    "    r = mx.distributed.recv_like(mx.ones(4), (rank - 1) % size)\n"
    "    mx.eval(r, s) if rank % 2 else mx.eval(s, r)\n"
    "    mx.eval(y)\n"
    "    refs += [weakref.ref(y), weakref.ref(s), weakref.ref(r)]\n"
    "del y, s, r\n"
    "gc.collect()\n"
    "alive = sum(ref() is not None for ref in refs)\n"
    "from mxnb.rank.runtime import current as _rt\n_m = _rt().oplog\n_m.sync()\n"
    "tracked = sum(ref() is not None for _, ref in _m.live.values())\n"
)


@pytest.mark.parametrize("line", ["--no-trace", "--no-trace --no-check"])
def test_results_are_not_kept_alive(run, line):
    if "--no-check" not in line:
        # checked mode pairs p2p in call order: each rank evaluates its recv on
        # its own stream so the exchange cannot deadlock
        code = KEEPS_NOTHING.replace(
            "mx.distributed.recv_like(mx.ones(4), (rank - 1) % size)",
            "mx.distributed.recv_like(mx.ones(4), (rank - 1) % size, stream=mx.new_stream(mx.cpu))",
        )
    else:
        code = KEEPS_NOTHING
    run(code, line)
    assert mxnb.pull("alive") == [0] * len(mxnb.pull("alive"))
    assert all(t == 0 for t in mxnb.pull("tracked"))


def test_memory_stays_flat_over_a_loop_of_large_collectives(run):
    # 60 results of 8 MiB each: 480 MiB per rank if the log held them
    run(
        "import psutil\n"
        "x = mx.ones(2**21)\n"
        "mx.eval(mx.distributed.all_sum(x))\n"
        "rss0 = psutil.Process().memory_info().rss\n"
        "for i in range(60):\n"
        "    mx.eval(mx.distributed.all_sum(x))\n"
        "grown_mb = (psutil.Process().memory_info().rss - rss0) / 2**20\n",
        "--no-trace",
    )
    grown = mxnb.pull("grown_mb")
    assert max(grown) < 100, grown


def test_op_log_is_bounded_but_counts_every_op(run):
    n = monitor.MAX_OPS + 500
    run(
        f"for _ in range({n}):\n"
        "    mx.eval(mx.distributed.all_sum(mx.array(1.0)))\n"
        "from mxnb.rank.runtime import current as _rt\n_m = _rt().oplog\n_m.sync()\n"
        "logged, last = len(_m.cell_ops), _m.cell_ops[-1].seq\n"
        "still_open = sum(not r.evaluated for r in _m.cell_ops)\n"
        "followed = len(_m.live)\n",
        "--no-trace --no-check",
    )
    assert set(mxnb.pull("logged")) == {monitor.MAX_OPS}
    assert set(mxnb.pull("last")) == {n}
    assert set(mxnb.pull("still_open")) == {0}
    # the map from results to ops forgets dead results in bulk, so it stays small
    assert max(mxnb.pull("followed")) <= monitor.LIVE_SWEEP


def test_bare_cell_is_plain_mlx_and_the_next_cell_is_watched_again(run, nranks):
    run(
        "y = mx.distributed.all_sum(mx.ones(3) * rank)\n"
        "total = y.tolist()\n"
        "from mxnb.rank.runtime import current as _rt\n_m = _rt().oplog\n"
        "logged, observed = len(_m.cell_ops), _rt().hooks.logger is _m\n",
        "--bare",
    )
    expect = [float(sum(range(nranks)))] * 3
    assert mxnb.pull("total") == [expect] * nranks
    assert set(mxnb.pull("logged")) == {0}
    assert set(mxnb.pull("observed")) == {False}
    # checks are back: a shape that differs between ranks is caught, not summed
    from mxnb.errors import RankError

    with pytest.raises(RankError, match="same shape and dtype"):
        run("mx.eval(mx.distributed.all_sum(mx.ones(2 + (rank == 0))))")
    run(
        "from mxnb.rank.runtime import current as _rt\n_m = _rt().oplog\n"
        "mx.eval(mx.distributed.all_sum(mx.ones(1)))\n_m.sync()\n"
        "logged, first = len(_m.cell_ops), _rt().hooks.logger is _m\n"
    )
    assert set(mxnb.pull("logged")) == {1}
    assert set(mxnb.pull("first")) == {True}


def test_bare_excludes_viz_and_is_cell_only(ip, run):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--bare turns off"):
        run("pass", "--bare --viz")
    with pytest.raises(UsageError, match="apply to %%mxdist cells only"):
        ip.run_line_magic("mxdist", "--bare")


def test_a_hang_in_a_bare_cell_still_ends_with_its_timeout(run, nranks):
    from mxnb.errors import RankError

    with pytest.raises(RankError) as info:
        run("if rank == 0:\n    mx.eval(mx.distributed.all_sum(mx.ones(2)))", "--bare --timeout 3")
    text = "\n".join(info.value._render_traceback_())
    assert "timed out after 3 s" in text
    assert "rank 0:" in text and "rank 1:" in text  # where each rank was
    # the next cell gets working ranks (rank 0 was stuck inside MPI: replaced)
    run("ok = mx.distributed.all_sum(mx.ones(1)).item()")
    assert mxnb.pull("ok") == [float(nranks)] * nranks


def test_a_call_mlx_refuses_is_refused_in_mlxs_words_and_leaves_no_op(run, nranks):
    """A peer outside the group: MLX's own ValueError, on every rank, and the op
    log (what hang reports list) holds only the ops that exist."""
    from mxnb.errors import RankError

    with pytest.raises(RankError) as info:
        run("mx.distributed.send(mx.ones(2), size)\n")
    said = str(info.value)
    assert f"ValueError: Invalid destination={nranks} for a group of size {nranks}" in said
    assert "IndexError" not in said
    run(
        "said = []\n"
        "alone = world.split(rank)  # a group of one: MLX refuses to send in it\n"
        "for bad in (lambda: mx.distributed.send(mx.ones(2), -1),\n"
        "            lambda: mx.distributed.recv((2,), mx.float32, size),\n"
        "            lambda: mx.distributed.send(mx.ones(2), 0, group=alone),\n"
        "            lambda: mx.distributed.send(mx.ones(2), 1.5),\n"
        "            lambda: mx.distributed.recv(4, mx.float32, 0),\n"
        "            lambda: mx.distributed.send(mx.ones(2)),\n"
        "            lambda: mx.distributed.all_sum(mx.ones(2), group=42)):\n"
        "    try:\n"
        "        bad()\n"
        "    except (TypeError, ValueError) as e:\n"
        "        said.append(f'{type(e).__name__}: {str(e).splitlines()[0]}')\n"
        "total = mx.distributed.all_sum(mx.ones(2))\n"
        "mx.eval(total)\n"
        "from mxnb.rank.runtime import current as _rt\n_rt().oplog.sync()\n"
        "logged = [r.op for r in _rt().oplog.cell_ops]\n"
    )
    wrong_types = "(): incompatible function arguments. The following argument types are supported:"
    want = [f"ValueError: Invalid destination=-1 for a group of size {nranks}",
            f"ValueError: Invalid source={nranks} for a group of size {nranks}",
            "ValueError: Cannot send to a singleton group",
            f"TypeError: send{wrong_types}", f"TypeError: recv{wrong_types}",
            f"TypeError: send{wrong_types}", f"TypeError: all_sum{wrong_types}"]  # fmt: skip
    assert mxnb.pull("said") == [want] * nranks
    assert mxnb.pull("logged") == [["all_sum"]] * nranks
    assert [t.tolist() for t in mxnb.pull("total")] == [[nranks] * 2] * nranks


def test_what_mlx_converts_for_an_op_mxnb_takes_as_mlx_does(run, nranks):
    """MLX turns a Python number or a NumPy array into an array for an op (and
    refuses a list): with mxnb watching, the same, and the op log reads the
    shape and dtype MLX made (float64 NumPy becomes float32)."""
    run(
        "import numpy as np\n"
        "made = [mx.distributed.all_sum(v) for v in (2.0, 3, np.ones((2, 2)), np.int64(5))]\n"
        "mx.eval(made)\n"
        "got = [(a.tolist(), str(a.dtype)) for a in made]\n"
        "sent = mx.distributed.send(np.arange(3.0), (rank + 1) % size)\n"
        "comm = mx.new_stream(mx.cpu)\n"
        "back = mx.distributed.recv_like(np.zeros(3), (rank - 1) % size, stream=comm)\n"
        "mx.eval(sent, back)\n"
        "got.append((back.tolist(), str(back.dtype)))\n"
        "try:\n"
        "    mx.distributed.all_sum([1.0, 2.0])\n"
        "except ValueError as e:\n"
        "    got.append(str(e))\n"
        "from mxnb.rank.runtime import current as _rt\n_rt().oplog.sync()\n"
        "logged = [(r.op, r.shape, r.dtype) for r in _rt().oplog.cell_ops]\n"
    )
    n = nranks
    want = [
        (2.0 * n, "mlx.core.float32"),
        (3 * n, "mlx.core.int32"),
        ([[1.0 * n] * 2] * 2, "mlx.core.float32"),
        (5 * n, "mlx.core.int64"),
        ([0.0, 1.0, 2.0], "mlx.core.float32"),
        "Invalid type list received in array initialization.",
    ]
    assert mxnb.pull("got") == [want] * n
    logged = [("all_sum", (), "float32"), ("all_sum", (), "int32"),
              ("all_sum", (2, 2), "float32"), ("all_sum", (), "int64"),
              ("send", (3,), "float32"), ("recv", (3,), "float32")]  # fmt: skip
    assert mxnb.pull("logged") == [logged] * n
    # the trace says why it shows no input values for them
    steps = mxnb.last_trace().steps[:4]  # the four all_sums
    states = {s.ranks[r]["states"].get("before") for s in steps for r in range(n)}
    assert states == {"converted"}


def test_an_evaluation_reads_mlxs_graph_once(run, nranks):
    """An open send, a compiled function with communication and a collective
    inside an expression all need MLX's graph at one evaluation: MLX writes it
    once (0.4 ms on a training step's graph), not once for each."""
    run(
        "avg = mx.compile(lambda v: mx.distributed.all_sum(v) / size)\n"
        "mx.eval(avg(mx.ones(3)))  # traced: its all_sum is checked where it runs\n"
        "s = mx.distributed.send(mx.ones(2), (rank + 1) % size)  # open: not evaluated yet\n"
        "z = mx.distributed.all_sum(mx.ones(4)) * 2  # handed inside an expression\n"
        "y = avg(mx.ones(3))\n"
        "writes, _real = [], mx.export_to_dot\n"
        "def _counted(*a, **k):\n"
        "    writes.append(1)\n"
        "    return _real(*a, **k)\n"
        "mx.export_to_dot = _counted\n"
        "try:\n"
        "    mx.eval(z, y)\n"
        "finally:\n"
        "    mx.export_to_dot = _real\n"
        "n_writes = len(writes)\n"
        "own = mx.new_stream(mx.cpu)\n"
        "r = mx.distributed.recv_like(mx.ones(2), (rank - 1) % size, stream=own)\n"
        "mx.eval(s, r)\n"
        "got = (z.tolist(), y.tolist(), r.tolist())\n",
        "--no-trace",
    )
    assert mxnb.pull("n_writes") == [1] * nranks
    assert mxnb.pull("got") == [([2.0 * nranks] * 4, [1.0] * 3, [1.0] * 2)] * nranks
