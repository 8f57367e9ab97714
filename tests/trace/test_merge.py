"""Traces of real MLX collectives on 2 and 4 ranks, checked against NumPy.

Every op of ``mx.distributed`` is run through ``%%mxdist`` on the shared
session cluster; the trace the ranks hand over must hold each rank's input and
output exactly, the right groups, peers and call lines, and recording must
never change what the user's code computes or run what it did not evaluate.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import mxnb
from collective_cases import EXPECTED, SETUP, inputs
from mxnb.errors import MxnbError, RunOrderError
from mxnb.protocol.snapshot import MAX_BYTES, snapshot_size
from mxnb.protocol.wording import ranks_text as rank_list
from mxnb.trace import Trace

pytestmark = pytest.mark.cluster


def traced(run, code: str, line: str = "") -> Trace:
    run(code, line=line)
    return mxnb.last_trace()


@pytest.mark.parametrize(("op", "expect"), EXPECTED)
def test_collective_trace_matches_numpy(run, nranks, op, expect):
    t = traced(run, f"{SETUP}y = mx.distributed.{op}(x)\nmx.eval(y)")
    xs, want = inputs(nranks), expect(inputs(nranks))
    assert len(t) == 1
    step = t.steps[0]
    assert (step.op, step.group, step.members) == (op, "world", list(range(nranks)))
    assert step.mismatch == []
    for r in range(nranks):
        m = step.ranks[r]
        assert m["seq"] == 1
        assert m["in"] == {"shape": [2, 3], "dtype": "float32"}
        assert m["out"] == {"shape": list(want.shape), "dtype": "float32"}
        # the editor's line: the %%mxdist line is line 1
        assert m["site"]["line"] == 4 and f"mx.distributed.{op}(x)" in m["site"]["code"]
        assert m["group_rank"] == r and m["group_size"] == nranks
        assert m["call_s"] >= 0 and m["eval_s"] >= 0 and m["eval_by"] == "mx.eval"
        np.testing.assert_array_equal(t.value(1, r, "before"), xs[r])
        np.testing.assert_array_equal(t.value(1, r, "after"), want)
    assert f"#1 {op} on world (" in t.text()


def test_ring_send_recv_trace(run, nranks):
    t = traced(
        run,
        "nxt, prv = (rank + 1) % size, (rank - 1) % size\n"
        "x = mx.arange(4, dtype=mx.float32) + 10 * rank\n"
        "s = mx.distributed.send(x, nxt)\n"
        "r = mx.distributed.recv((4,), mx.float32, prv, stream=mx.new_stream(mx.cpu))\n"
        "mx.eval(s, r)\n",
    )
    # one step: each message drawn once; a row holds what the rank sent and what it got
    assert [s.op for s in t.steps] == ["send/recv"]
    (step,) = t.steps
    arrows = sorted((tr.src, tr.dst) for tr in step.transfers)
    assert arrows == [(r, (r + 1) % nranks) for r in range(nranks)]
    assert all(tr.matched and not tr.note for tr in step.transfers)
    for r in range(nranks):
        mine = np.arange(4, dtype=np.float32) + 10 * r
        got = np.arange(4, dtype=np.float32) + 10 * ((r - 1) % nranks)
        np.testing.assert_array_equal(t.value(1, r, "before"), mine)
        np.testing.assert_array_equal(t.value(1, r, "after"), got)
        assert step.ranks[r]["site"]["line"] == 4 and step.ranks[r]["recv_site"]["line"] == 5
    assert step.site_text().startswith("line 4: s = mx.distributed.send(x, nxt) / line 5: r =")


def test_a_scatter_by_a_loop_of_sends_is_one_transfer_step_per_message(run, nranks):
    """Rank 0 sends row r to rank r in a loop (one send step per call); the
    others' recvs are one step, split so that each message has its own step."""
    t = traced(
        run,
        "rows = mx.arange(2 * size, dtype=mx.float32).reshape(size, 2) * 10\n"
        "if rank == 0:\n"
        "    mx.eval(*[mx.distributed.send(rows[r], r) for r in range(1, size)])\n"
        "else:\n"
        "    mine = mx.distributed.recv_like(rows[0], 0)\n"
        "    mx.eval(mine)\n",
        line="--viz",  # the rows sent are temporaries: keep them to show them
    )
    assert [s.op for s in t.steps] == ["send/recv_like"] * (nranks - 1)
    for k, step in enumerate(t.steps, start=1):
        assert sorted(step.ranks) == [0, k]
        ((src, dst),) = [(tr.src, tr.dst) for tr in step.transfers]
        assert (src, dst) == (0, k) and step.transfers[0].matched
        np.testing.assert_array_equal(t.value(k, k, "after"), [20 * k, 20 * k + 10])
        np.testing.assert_array_equal(t.value(k, 0, "before"), [20 * k, 20 * k + 10])
    text = t.text()
    for k in range(1, nranks):
        assert f"rank 0 -> rank {k}: float32 (2,)" in text


def test_a_gather_by_a_loop_of_recvs_is_one_transfer_step_per_message(run, nranks):
    t = traced(
        run,
        "mine = mx.full((3,), float(rank))\n"
        "if rank == 0:\n"
        "    got = [mx.distributed.recv_like(mine, r) for r in range(1, size)]\n"
        "    mx.eval(got)\n"
        "else:\n"
        "    mx.eval(mx.distributed.send(mine, 0))\n",
    )
    assert [s.op for s in t.steps] == ["send/recv_like"] * (nranks - 1)
    for k, step in enumerate(t.steps, start=1):
        assert sorted(step.ranks) == [0, k]
        assert [(tr.src, tr.dst) for tr in step.transfers] == [(k, 0)]
        np.testing.assert_array_equal(t.value(k, 0, "after"), [k] * 3)
        np.testing.assert_array_equal(t.value(k, k, "before"), [k] * 3)


def test_recv_like_one_way_is_one_step_with_an_arrow(run, nranks):
    last = nranks - 1
    t = traced(
        run,
        "x = mx.ones((2, 2), dtype=mx.int32) * 7\n"
        "if rank == 0:\n"
        f"    out = mx.distributed.send(x, {last})\n"
        f"elif rank == {last}:\n"
        "    out = mx.distributed.recv_like(mx.zeros((2, 2), dtype=mx.int32), 0)\n"
        "if rank in (0, size - 1):\n"
        "    mx.eval(out)\n",
    )
    assert len(t) == 1
    step = t.steps[0]
    assert step.op == "send/recv_like" and sorted(step.ranks) == [0, last]
    (arrow,) = step.transfers
    assert (arrow.src, arrow.dst, arrow.matched, arrow.what) == (0, last, True, "int32 (2, 2)")
    np.testing.assert_array_equal(t.value(1, last, "after"), np.full((2, 2), 7))
    assert t.value(1, last, "after").dtype == np.float64  # exact, as float64
    assert step.snap(last, "before")[1] == "template"
    assert "rank 0 -> rank " + str(last) + ": int32 (2, 2)" in t.text()


def test_a_check_s_wait_is_shown_apart_from_the_evaluation(run, nranks):
    """The time a view gives an op is MLX's evaluation; the checked exchange that
    preceded it is measured and said separately, and only when checks ran."""
    code = "y = mx.distributed.all_sum(mx.ones(4))\nmx.eval(y)\n"
    t = traced(run, code)
    for r in range(nranks):
        m = t.steps[0].ranks[r]
        assert m["eval_s"] > 0 and m["check_s"] >= 0
    assert "; before it, mxnb's check waited " in t.text()
    t = traced(run, code, "--no-check")
    assert all(t.steps[0].ranks[r]["check_s"] is None for r in range(nranks))
    assert "mxnb's check waited" not in t.text()


def test_a_refused_sum_scatter_leaves_no_step(run, nranks):
    """MPI does not implement sum_scatter: the call is refused before MLX sees it
    (mxnb.rank.backend), so the trace holds no op that never could run."""
    t = traced(
        run,
        f"x = mx.ones(({2 * nranks}, 3))\n"
        "try:\n"
        "    y = mx.distributed.sum_scatter(x)\n"
        "except RuntimeError as e:\n"
        "    said = str(e)\n",
    )
    assert t.steps == []
    assert all("not available on MLX's mpi backend" in s for s in mxnb.pull("said"))


def test_split_groups_are_named_with_their_members(run, nranks):
    t = traced(
        run,
        "sub = world.split(rank % 2)\n"
        "s = mx.distributed.all_sum(mx.array([float(rank), 1.0]), group=sub)\n"
        "mx.eval(s)\n"
        "del sub\n",
    )
    evens = [r for r in range(nranks) if r % 2 == 0]
    odds = [r for r in range(nranks) if r % 2 == 1]
    assert sorted(s.members for s in t.steps) == [evens, odds]
    for step in t.steps:
        # splits are numbered over the ranks' life: earlier cells may have split too
        assert step.op == "all_sum" and re.fullmatch(r"split #\d+ color [01]", step.group)
        assert sorted(step.ranks) == step.members
        assert step.group_text() == f"{step.group} (world {rank_list(step.members)})"
        for r in step.members:
            want = [float(sum(step.members)), float(len(step.members))]
            np.testing.assert_array_equal(t.value(step.index, r, "after"), want)


@pytest.mark.parametrize(
    "dtype",
    [
        *("bool_", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"),
        *("float16", "bfloat16", "float32", "float64", "complex64"),
    ],
)
def test_every_dtype_is_recorded_exactly(run, nranks, dtype):
    """all_gather of each dtype (all_sum of bool would abort an MPI job)."""
    npdt = {"bool_": "bool", "bfloat16": "float32"}.get(dtype, dtype)
    t = traced(
        run,
        "import numpy as np\n"
        f"x = (mx.arange(3) + 2 * rank).astype(mx.{dtype})\n"
        "if mx.issubdtype(x.dtype, mx.complexfloating):\n"
        "    x = x + 1j * rank\n"
        "y = mx.distributed.all_gather(x)\n"
        "mx.eval(y)\n",
    )
    name = "bool" if dtype == "bool_" else dtype
    (step,) = t.steps
    want = np.concatenate(
        [
            (np.arange(3) + 2 * r).astype(npdt) + (1j * r if dtype == "complex64" else 0)
            for r in range(nranks)
        ]
    )
    for r in range(nranks):
        assert step.ranks[r]["in"]["dtype"] == name
        snap, state = step.snap(r, "after")
        assert state == "ok" and snap["dtype"] == name and snap["exact"]
        np.testing.assert_array_equal(
            t.value(1, r, "after"), want.astype(t.value(1, r, "after").dtype)
        )
    assert step.mismatch == []


def test_large_array_is_capped_at_64_kib_per_rank(run, nranks):
    t = traced(
        run, "big = mx.random.normal((4096, 4096))\ns = mx.distributed.all_sum(big)\nmx.eval(s)"
    )
    (step,) = t.steps
    for r in range(nranks):
        for side in ("before", "after"):
            snap, state = step.snap(r, side)
            assert state == "ok" and not snap["exact"]
            assert snapshot_size(snap) <= MAX_BYTES
            assert snap["shape"] == [4096, 4096] and snap["dshape"][0] * snap["dshape"][1] <= 30_000
    # exact statistics survive downsampling: every rank holds the same sum
    stats = [step.snap(r, "after")[0]["stats"] for r in range(nranks)]
    assert all(s == stats[0] for s in stats)
    assert step.mismatch == []
    assert "downsampled 4096x4096 to 171x171 (block means)" in t.text()
    run("del big, s")


def test_time_is_the_evaluation_that_moved_the_data(run, nranks):
    """A 64 MB all_sum: the call builds a graph node, mx.eval moves the data.

    An op evaluated only inside a larger expression is not timed (that
    evaluation's time is not its own); two ops evaluated together share one.
    """
    t = traced(
        run,
        "big = mx.ones((4096, 4096))\n"
        "mx.eval(big)\n"
        "s = mx.distributed.all_sum(big)\n"
        "mx.eval(s)\n"
        "y = mx.distributed.all_sum(mx.arange(3.0) + rank)\n"
        "z = y * 2\n"
        "mx.eval(z)\n"
        "a, b = mx.distributed.all_max(z), mx.distributed.all_min(z)\n"
        "mx.eval(a, b)\n"
        "first = float(b[0])\n",
    )
    big, inner, amax, amin = t.steps
    assert big.ranks[0]["in"] == {"shape": [4096, 4096], "dtype": "float32"}
    for r in range(nranks):
        m = big.ranks[r]
        assert m["eval_by"] == "mx.eval" and (m["eval_ops"], m["eval_arrays"]) == (1, 1)
        assert m["eval_s"] > 10 * m["call_s"], (m["eval_s"], m["call_s"])
        i = inner.ranks[r]
        assert i["eval_s"] is None and i["eval_note"] == "indirect"
        assert i["call_s"] >= 0
        for m in (amax.ranks[r], amin.ranks[r]):
            assert m["eval_s"] is not None and (m["eval_ops"], m["eval_arrays"]) == (2, 2)
        # float(b[0]) evaluated an expression of b: b's time is still that of mx.eval(a, b)
        assert amin.ranks[r]["eval_s"] == amax.ranks[r]["eval_s"]
    text = t.text()
    assert " | evaluated in " in text and "by mx.eval (with 1 other op)" in text
    assert text.count("not timed: evaluated as part of a larger expression") == nranks
    run("del big, s")


def test_ranks_that_disagree_on_real_data_are_marked(run, nranks):
    """An all_sum where the last rank passes int32 and the others float32.

    Unchecked (``--no-check``), MPI reduces the same bytes as different types
    and returns without error (FACTS.md, "all_sum, dtype differs per rank:
    silent garbage").  The trace must mark exactly that op, and exactly the
    ranks whose result is not the sum of the inputs as numbers, read back from
    the ranks themselves: ranks that agree with each other on a wrong sum too.
    """
    last = nranks - 1
    t = traced(
        run,
        "fine = mx.distributed.all_sum(mx.ones(2) * rank)\n"
        "mx.eval(fine)\n"
        f"x = mx.arange(4, dtype=mx.int32 if rank == {last} else mx.float32) + 1\n"
        "y = mx.distributed.all_sum(x)\n"
        "mx.eval(y)\n",
        line="--no-check --timeout 60",
    )
    ys = mxnb.pull("y")
    assert ys[last].dtype == np.int32 and all(y.dtype == np.float32 for y in ys[:last])
    want = nranks * (np.arange(4) + 1.0)  # what every rank should hold
    expected = [r for r, y in enumerate(ys) if not np.allclose(y.astype(np.float64), want)]
    assert last in expected
    fine, bad = t.steps
    assert fine.mismatch == [] and fine.inputs_note == ""
    assert bad.op == "all_sum" and bad.mismatch == expected
    np.testing.assert_array_equal(bad.expected.values[0], want)
    for r in range(nranks):
        np.testing.assert_array_equal(t.value(2, r, "after"), ys[r].astype(np.float64))
    kinds = [
        f"rank {last} passed int32 (4,)",
        f"{rank_list(list(range(last)))} passed float32 (4,)",
    ]
    if nranks == 2:  # equal counts: in rank order
        kinds.reverse()
    assert bad.inputs_note == "inputs differ: " + "; ".join(kinds)
    text = t.text()
    assert f"  !! {bad.inputs_note}" in text
    assert f"  !! {bad.mismatch_text()}" in text
    assert bad.mismatch_text().endswith("expected the sum of the ranks' inputs as numbers "
                                        "(the ranks passed different dtypes)")  # fmt: skip
    assert text.count(f"(expected [{' '.join(str(int(v)) for v in want)}])") == len(expected)
    if nranks == 4:
        # Measured with Open MPI 5.0: ranks 0-2 agree on a wrong sum; all are marked
        assert expected == [0, 1, 2, 3]
    assert text.count("!! ") == 2  # nothing said about the op that agreed
    # the widget: the op's state and the panels it frames in red
    from mxnb.views.picture import RED, render
    from mxnb.views.widget import TraceWidget

    state = TraceWidget(t).trace["steps"]
    assert [s["mismatch"] for s in state] == [[], expected]
    assert state[1]["mismatch_text"] == bad.mismatch_text()
    img, layout = render(t)
    red = np.all(np.asarray(img) == RED, axis=-1)
    # the picture frames exactly those ranks' results (a box's top edge all red)
    boxes = {r: layout.panels[(2, r, "after")] for r in range(nranks)}
    assert [r for r, (x0, y0, x1, _) in boxes.items() if red[y0, x0 : x1 + 1].all()] == expected
    _, top, _, _ = layout.ops[2]  # and nothing about op 1 (drawn above op 2) is red
    first = layout.ops[1][1]  # (the timeline above them marks op 2's lanes)
    red_rows = np.nonzero(red[first:].any(axis=1))[0] + first
    assert red_rows.min() >= top
    run("del fine, x, y")


def test_unevaluated_ops_are_not_run_by_recording(run, nranks):
    """A send the cell never evaluates must not happen: the next message rank 1
    receives from rank 0 is the one sent later, not the unevaluated one.

    Plain MLX semantics (--no-check): checked mode pairs messages by the order
    of the send/recv *calls*, so it would wait for a recv of the first send.
    """
    line = "--no-check --timeout 60"
    t = traced(
        run,
        "first = mx.distributed.send(mx.full((3,), 1.0), 1) if rank == 0 else None\n"
        "pending = mx.distributed.all_sum(mx.ones(2) * rank)\n"
        "chained = mx.distributed.all_max(pending)\n",
        line=line,
    )
    assert [s.op for s in t.steps] == ["send", "all_sum", "all_max"]
    assert t.steps[0].snap(0, "after") == (None, "lazy")
    assert t.steps[0].transfers[0].note.startswith("no matching recv on rank 1")
    for r in range(nranks):
        assert t.steps[1].snap(r, "after") == (None, "lazy")
        # the input of all_max is the unevaluated all_sum: not evaluated either
        assert t.steps[2].snap(r, "before") == (None, "lazy")
    run(
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(mx.full((3,), 2.0), 1))\n"
        "elif rank == 1:\n"
        "    got = mx.distributed.recv((3,), mx.float32, 0)\n"
        "    mx.eval(got)\n"
        "del first, pending, chained\n",
        line=line,
    )
    assert mxnb.pull("got", targets=[1]) == [pytest.approx(np.full(3, 2.0))]


GRADS = """
import mlx.nn as nn
from mlx.nn.utils import average_gradients
mx.random.seed(7)
model = nn.Linear(3, 2)
X = mx.random.normal((8, 3), key=mx.random.key(rank + 1))
loss_fn = lambda m, X: (m(X) ** 2).mean()
loss, grads = nn.value_and_grad(model, loss_fn)(model, X)
avg = average_gradients(grads)
mx.eval(avg)
local_w, avg_w, avg_b = grads["weight"], avg["weight"], avg["bias"]
"""


def test_average_gradients_unchanged_by_recording(run, nranks):
    run(GRADS, line="--no-trace")
    plain = mxnb.pull("avg_w"), mxnb.pull("avg_b")
    with pytest.raises(MxnbError, match="--no-trace"):
        mxnb.last_trace()
    run(GRADS, line="--viz")  # keeps the packed gradients, a temporary, for the view
    t = mxnb.last_trace()
    recorded = mxnb.pull("avg_w"), mxnb.pull("avg_b")
    local = mxnb.pull("local_w")
    for a, b in zip(plain, recorded, strict=True):
        for r in range(nranks):
            np.testing.assert_array_equal(a[r], b[r])  # bitwise the same
    np.testing.assert_allclose(recorded[0][0], np.mean(local, axis=0), rtol=1e-5, atol=1e-7)
    (step,) = t.steps  # average_gradients packs everything into one all_sum
    assert step.op == "all_sum" and "average_gradients(grads)" in step.site_text()
    assert step.ranks[0]["in"]["shape"] == [3 * 2 + 2]
    np.testing.assert_array_equal(t.value(1, 1, "before")[:6], local[1].reshape(-1))


SHARDED = """
import mlx.nn as nn
from mlx.nn.layers.distributed import shard_linear
mx.random.seed(3)
l1, l2 = nn.Linear(4, 8), nn.Linear(8, 2)
a = shard_linear(l1, "all-to-sharded")
b = shard_linear(l2, "sharded-to-all")
X = mx.random.normal((5, 4), key=mx.random.key(11))
full = l2(nn.relu(l1(X)))
loss = lambda m1, X: (b(nn.relu(m1(X))) ** 2).sum()
val, g = nn.value_and_grad(a, loss)(a, X)
out = b(nn.relu(a(X)))
mx.eval(full, out, val, g)
ok = bool(mx.allclose(out, full, atol=1e-5))
gw = g["weight"]
"""


def test_sharded_layers_unchanged_by_recording(run, nranks):
    run(SHARDED, line="--no-trace")
    plain = mxnb.pull("gw")
    run(SHARDED)
    t = mxnb.last_trace()
    assert mxnb.pull("ok") == [True] * nranks
    for a, b in zip(plain, mxnb.pull("gw"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert {s.op for s in t.steps} == {"all_sum"}
    assert any("b(nn.relu(a(X)))" in s.site_text() for s in t.steps)


def test_compiled_function_unchanged_by_recording(run, nranks):
    code = (
        "@mx.compile\n"
        "def f(a):\n"
        "    return mx.distributed.all_sum(a * 2) + 1\n"
        "x = mx.arange(3, dtype=mx.float32) + rank\n"
        "c1, c2 = f(x), f(x + 1)\n"
        "mx.eval(c1, c2)\n"
    )
    run(code, line="--no-trace")
    plain = mxnb.pull("c1"), mxnb.pull("c2")
    t = traced(run, code)
    for a, b in zip(plain, (mxnb.pull("c1"), mxnb.pull("c2")), strict=True):
        for r in range(nranks):
            np.testing.assert_array_equal(a[r], b[r])
    base = sum(np.arange(3, dtype=np.float32) + r for r in range(nranks))
    np.testing.assert_array_equal(plain[0][0], 2 * base + 1)
    # one op per run of the compiled all_sum; its values stay inside MLX's graph
    assert [step.op for step in t.steps] == ["all_sum", "all_sum"]
    states = {step.snap(r, side)[1] for step in t.steps for r in range(nranks)
              for side in ("before", "after")}  # fmt: skip
    assert states == {"compiled"}


def test_viz_flag_displays_widget_with_fallbacks(ip, run, nranks):
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        run("y = mx.distributed.all_sum(mx.ones(3) * rank)\nmx.eval(y)", line="--viz")
    pic, text, live = cap.outputs[-3:]  # a picture and a summary, then the widget
    head = f"mxnb trace: 1 op on {rank_list(list(range(nranks)))}\n#1 all_sum on world"
    assert text.data == {"text/plain": mxnb.last_trace().text()}
    assert text.data["text/plain"].startswith(head)
    assert set(pic.data) == {"image/png", "text/plain"}
    assert "application/vnd.jupyter.widget-view+json" in live.data
    with capture_output() as cap:
        mxnb.show()
    assert [set(o.data) for o in cap.outputs][:2] == [{"image/png", "text/plain"}, {"text/plain"}]


def test_no_trace_and_viz_conflict(run):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--no-trace"):
        run("pass", line="--viz --no-trace")


def test_cell_without_ops_has_an_empty_trace(run):
    t = traced(run, "z = 1")
    assert len(t) == 0 and "called no mx.distributed operation" in t.text()


def test_transfer_in_flight_does_not_block_the_trace(run, nranks):
    """An async_eval'd recv whose send comes in a later cell looks evaluated;
    reading it for the trace must give up after a short grace, not hang."""
    from mxnb.rank.recorder import READ_GRACE

    line = "--no-check --timeout 60"
    run(
        "if rank == 1:\n"
        "    late = mx.distributed.recv((2,), mx.float32, 0, stream=mx.new_stream(mx.cpu))\n"
        "    mx.async_eval(late)\n",
        line=line,
    )
    t0 = time.monotonic()
    t = mxnb.last_trace()
    assert time.monotonic() - t0 < READ_GRACE + 10
    (step,) = t.steps
    assert step.op == "recv" and step.snap(1, "after") == (None, "in_flight")
    assert "(still in flight when read)" in t.text()
    run(
        "if rank == 0:\n"
        "    mx.eval(mx.distributed.send(mx.array([5.0, 6.0]), 1))\n"
        "elif rank == 1:\n"
        "    mx.eval(late)\n",
        line=line,
    )
    assert mxnb.pull("late", targets=[1])[0].tolist() == [5.0, 6.0]


def test_the_next_cell_gets_the_memory_a_trace_kept_back(run, nranks):
    # the trace keeps the first 32 ops' arrays until the next cell; MLX would
    # then keep their buffers cached, and later loops cycle through cold ones
    run("for _ in range(40):\n    mx.eval(mx.distributed.all_sum(mx.ones(2**18)))")
    run("cached_mb = mx.get_cache_memory() / 2**20", "--bare")
    assert max(mxnb.pull("cached_mb")) < 4, mxnb.pull("cached_mb")


@pytest.mark.parametrize("viz", ["", "--viz"])
def test_ops_the_check_refused_are_mismatched_not_in_flight(run, nranks, viz):
    """Nothing moved: the timeline marks the disagreeing ranks, and the words
    say that mxnb's check stopped the op before MLX ran it."""
    from mxnb.trace.view import trace_view

    p2p = (
        "if rank == 0:\n    mx.eval(mx.distributed.send(mx.ones(4), dst=1))\n"
        "elif rank == 1:\n    print(mx.distributed.recv((4,), mx.int32, src=0))\n"
    )
    with pytest.raises(MxnbError):
        run(p2p, line=viz)
    t = mxnb.last_trace()
    (step,) = t.steps
    assert [step.ranks[r]["eval_note"] for r in (0, 1)] == ["refused", "refused"]
    assert trace_view(t).steps[0].lanes == {0: "mismatched", 1: "mismatched"}
    assert step.transfers[0].note == (
        "sends float32 (4,), the recv expects int32 (4,): mxnb's check stopped both"
    )
    text = t.text()
    assert "refused by mxnb's check, which found the ranks disagree" in text
    assert "in flight" not in text and "interrupted" not in text
    with pytest.raises(MxnbError):
        run("mx.eval(mx.distributed.all_sum(mx.ones(rank + 1)))", line=viz)
    t = mxnb.last_trace()
    assert trace_view(t).steps[0].lanes == dict.fromkeys(range(nranks), "mismatched")
    assert {m["eval_note"] for m in t.steps[0].ranks.values()} == {"refused"}


def test_an_op_evaluated_with_a_refused_one_is_held_back_not_interrupted(run, nranks):
    """``a``'s ranks agree, ``b``'s do not; one mx.eval of both runs neither."""
    from mxnb.trace.view import trace_view

    code = (
        "a = mx.distributed.all_sum(mx.ones(2))\n"
        "b = mx.distributed.all_sum(mx.ones(rank + 1))\n"
        "mx.eval(a, b)\n"
    )
    with pytest.raises(MxnbError):
        run(code)
    t = mxnb.last_trace()
    first, second = t.steps
    assert {m["eval_note"] for m in first.ranks.values()} == {"held_back"}
    assert {m["eval_note"] for m in second.ranks.values()} == {"refused"}
    lanes = [s.lanes for s in trace_view(t).steps]
    every = range(nranks)
    assert lanes == [dict.fromkeys(every, "lazy"), dict.fromkeys(every, "mismatched")]
    text = t.text()
    assert "not run: mxnb's check refused another op just before its evaluation" in text
    assert "interrupted" not in text


def test_an_op_stopped_by_a_refused_op_it_was_not_evaluated_with_is_held_back(run, nranks):
    """Evaluating ``a`` also verifies the landed check of ``b``, whose ranks
    disagree: neither runs, and both say why (not 'interrupted', not 'lazy')."""
    from mxnb.trace.view import trace_view

    code = (
        "b = mx.distributed.all_sum(mx.ones(rank + 1))\n"
        "a = mx.distributed.all_sum(mx.ones(2))\n"
        "import time; time.sleep(0.3)  # every rank's half of both checks has landed\n"
        "mx.eval(a)\n"
    )
    with pytest.raises(MxnbError):
        run(code)
    t = mxnb.last_trace()
    refused, held = t.steps
    assert {m["eval_note"] for m in refused.ranks.values()} == {"refused"}
    assert {m["eval_note"] for m in held.ranks.values()} == {"held_back"}
    lanes = [s.lanes for s in trace_view(t).steps]
    every = range(nranks)
    assert lanes == [dict.fromkeys(every, "mismatched"), dict.fromkeys(every, "lazy")]
    text = t.text()
    assert "not run: mxnb's check refused another op just before its evaluation" in text
    assert "interrupted" not in text


def test_collectives_run_in_different_orders_are_named(run, nranks, ip):
    """Every rank calls all_sum a then b; the last rank evaluates b first.  The
    checks compare the calls, which agree, and MPI pairs the runs: the last
    rank's b was combined with the others' a.  The cell fails saying why, and
    the trace says it under both ops."""
    last = nranks - 1
    with pytest.raises(RunOrderError) as err:
        run(
            "x = mx.array([1.0, 2.0]) * (rank + 1)\n"
            "a = mx.distributed.all_sum(x)\n"
            "b = mx.distributed.all_sum(x * 10)\n"
            "if rank == size - 1:\n"
            "    mx.eval(b)\n    mx.eval(a)\n"
            "else:\n"
            "    mx.eval(a)\n    mx.eval(b)\n",
            "--timeout 30",
        )
    assert str(err.value) == (
        f"On world ({rank_list(range(nranks))}): ranks 0, {last} ran #1 (line 3: a = "
        "mx.distributed.all_sum(x)) and #2 (line 4: b = mx.distributed.all_sum(x * 10)) "
        f"in different orders (rank 0 ran #1 first, rank {last} #2): MPI pairs a group's "
        "collectives in the order each rank runs them, so it combined different "
        "collectives across the ranks. Evaluate them in the same order on every rank. "
        "The trace of the cell (mxnb.show()) marks the results that are wrong."
    )
    text = mxnb.last_trace().text()
    said = f"!! ranks 0, {last} ran #1 and #2 in different orders (rank 0 ran #1 first, "
    assert said + f"rank {last} #2): MPI pairs" in text
    assert text.count("in different orders") == 2  # under both ops
    # what MPI did: b and a mixed, as its algorithm for the world size mixes them
    right = sum(range(1, nranks + 1))
    assert any(got.tolist() != [right, 2 * right] for got in mxnb.pull("a"))


def test_one_order_on_every_rank_passes_and_costs_no_fetch(run, ip):
    """Every rank evaluates b before a: out of call order, but the same order,
    so MPI paired the right collectives; a cell in call order fetches nothing."""
    tracing = mxnb._session(ip).tracing
    run(
        "x = mx.array([1.0, 2.0])\n"
        "a = mx.distributed.all_sum(x)\n"
        "b = mx.distributed.all_sum(x * 10)\n"
        "mx.eval(b)\nmx.eval(a)\n"
        "assert a.tolist() == [size, 2 * size] and b.tolist() == [10 * size, 20 * size]\n"
    )
    assert tracing.trace is None  # every rank said the same order: nothing was fetched
    assert "in different orders" not in mxnb.last_trace().text()
    run("y = mx.distributed.all_sum(x)\nmx.eval(y)\nz = mx.distributed.all_sum(x)\nmx.eval(z)\n")
    assert tracing.trace is None
