"""The op path in C (mxnb.rank.fastpath): built here, taken by a loop's ops, and
the same records, traces, reports and errors as the Python path it stands in for."""

from __future__ import annotations

from typing import Any

import pytest

import mxnb
from mxnb.errors import RankError
from mxnb.rank import fastpath

TOGGLE = (
    "from mxnb.rank.runtime import current as _rt\n"
    "_rt().fast.set_enabled({on})\n"
    "_before = _rt().fast.module.counts()\n"
)
#: Ops and evaluations the C path takes, ones it leaves to Python, and the
#: hand-overs between them: a probe's look mid-cell (a full buffer mid-loop: LONG).
SCENARIO = """
d = mx.distributed
x = mx.ones((4, 3)) * (rank + 1)
for _ in range(5):
    mx.eval(d.all_sum(x))
y = d.all_gather(x, group=world)
z, w = d.all_max(x), d.all_min(x)
mx.eval(z, w, z)
mx.eval(y)
e = d.all_sum(x) * 2
mx.eval(e)
v = d.all_sum(x)
v.tolist()
mx.eval(v)
mid = _rt().oplog.state()
for _ in range(2100):
    mx.eval(d.all_sum(x))
s = d.all_sum(mx.ones(2, dtype=mx.int32))
mx.eval(s)
g = mx.zeros((3,), dtype=mx.int32)
g += mx.ones((2, 3))  # the same Python object, now float32 (2, 3)
mx.eval(d.all_sum(g), d.all_gather(g))
b = d.all_sum(x, stream=mx.cpu)
mx.eval(b)
lazy = d.all_sum(x)
f = d.all_sum(x)
print(f.shape)
mx.eval(f)
state = _rt().oplog.state()
seq = _rt().hooks.seq
taken = [a - b for a, b in zip(_rt().fast.module.counts(), _before)]
"""


def _plain(report: dict[str, Any]) -> dict[str, Any]:
    """A rank's trace without what differs between two runs: clock readings, and
    the name IPython gives each cell's file."""
    ops = []
    for op in report["ops"]:
        op = dict(op)
        for key in ("t", "call_s", "eval_s", "check_s"):
            op[key] = op.get(key) is None  # whether there is one, not its value
        if op.get("site"):
            op["site"] = {**op["site"], "file": None}
        ops.append(op)
    return {**report, "ops": ops}


#: The all_sum inside ``e = d.all_sum(x) * 2``: whether the op log marks it
#: evaluated depends on whether its check had landed when ``mx.eval(e)`` looked
#: (then nothing reads MLX's graph for it), on either path.
INSIDE = 9


def _settled(states: list[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    return [None if st is None else
            {**st, "ops": [{**op, "evaluated": None} if op["seq"] == INSIDE else op
                           for op in st["ops"]]} for st in states]  # fmt: skip


def _run_both(run: Any, code: str, line: str = "") -> list[tuple[list[Any], Any]]:
    out = []
    for on in (True, False):
        try:
            run(TOGGLE.format(on=on) + code, line)
            states = [_settled(mxnb.pull(name)) for name in ("mid", "state")]
            traces = [] if "--no-trace" in line else mxnb.last_trace().reports
            out.append((states, mxnb.pull("seq"), mxnb.pull("taken"),
                        [_plain(r) for r in traces]))  # fmt: skip
        finally:
            run(TOGGLE.format(on=True))
    return out


def test_the_module_is_built_and_current() -> None:
    """scripts/setup builds it: a stale or missing build would leave ranks on Python."""
    module = fastpath.load()
    assert module is not None, "run: python -m mxnb.rank.fastpath"
    assert module.SOURCE_DIGEST == fastpath.source_digest()


class _Reads:
    """Stands in for the module's C++ reads: MLX's own, or wrong in one way."""

    DTYPE_VALS = 64

    def __init__(self, wrong: str = "") -> None:
        self.wrong = wrong

    def mlx_read(self, a: Any) -> tuple[int, tuple[int, ...]] | None:
        import mlx.core as mx

        number = DTYPE_NAMES.index(str(a.dtype))
        number = {"one number": 0, "out of range": number + self.DTYPE_VALS}.get(self.wrong, number)
        shape = a.shape
        if self.wrong == "grown" and a.shape == (2, 3) and a.dtype == mx.float32:
            shape = (3,)  # as if read before MLX overwrote the array
        return None if self.wrong == "none" else (number, shape)


DTYPE_NAMES = [f"mlx.core.{name}" for name in ("int32", "float32", "float16", "uint8")]


@pytest.mark.parametrize("wrong", ["", "one number", "out of range", "grown", "none"])
def test_the_reads_are_used_only_where_they_agree_with_pythons(wrong):
    import mlx.core as mx

    dtypes = {getattr(mx, name.rsplit(".", 1)[1]): (name, code)
              for code, name in enumerate(DTYPE_NAMES)}  # fmt: skip
    table = fastpath.reader_table(_Reads(wrong), mx, dtypes)
    if wrong:
        assert table is None
    else:
        assert table == {code: (name, code) for code, name in enumerate(DTYPE_NAMES)}


def test_without_a_cpp_compiler_the_build_says_what_it_left_out(monkeypatch, tmp_path):
    real = fastpath.sysconfig.get_config_var
    monkeypatch.setattr(
        fastpath.sysconfig, "get_config_var", lambda k: "no-such-c++" if k == "CXX" else real(k)
    )
    assert fastpath.compile_mlx_reads(tmp_path / "reads.o") == "no C++ compiler (no-such-c++)"
    assert not (tmp_path / "reads.o").exists()


#: Arrays read in C++ and by Python: one an in-place op made float16 (5, 2, 3, 4)
#: under the same Python object, a strided view, a bfloat16 scalar, an empty one.
READS = """
from mxnb.rank.runtime import current as _rt
read = _rt().fast.module.mlx_read
on = _rt().fast.reads_mlx
a = mx.arange(24, dtype=mx.int32).reshape(2, 3, 4)
b = a[:, 1:].T
a += mx.ones((5, 2, 3, 4), dtype=mx.float16)
arrays = (a, b, mx.array(2.5, dtype=mx.bfloat16), mx.zeros((0, 7), dtype=mx.uint8))
named = {read(mx.zeros(1, dtype=v.dtype))[0]: str(v.dtype) for v in arrays}
seen = [(named[number], shape) for number, shape in map(read, arrays)]
want = [(str(v.dtype), v.shape) for v in arrays]
"""


@pytest.mark.cluster
def test_ops_read_dtype_and_shape_through_mlx(run, nranks):
    """Built by scripts/setup, with a C++ compiler and MLX's headers at hand:
    each rank reads an op's dtype and shape through MLX's own accessors, as
    Python reads them, also after an in-place op changed both."""
    run(READS)
    assert mxnb.pull("on") == [True] * nranks
    for seen, want in zip(mxnb.pull("seen"), mxnb.pull("want"), strict=True):
        assert seen == want
        assert want[0] == ("mlx.core.float16", (5, 2, 3, 4))
        assert want[1] == ("mlx.core.int32", (4, 2, 2))


@pytest.mark.cluster
def test_the_c_path_records_what_the_python_path_records(ip, run, nranks):
    # fresh ranks: a point-to-point op or a compiled function an earlier test left
    # alive sends every evaluation to Python, which reads MLX's graph for them
    ip.run_line_magic("mxdist", "restart")
    fast, python = _run_both(run, SCENARIO)
    state_c, seq_c, taken_c, trace_c = fast
    state_p, seq_p, taken_p, trace_p = python
    # the C path took the loop's ops and evaluations, and left the rest
    for ops_taken, ops_left, evals_taken, evals_left, *_ in taken_c:
        assert ops_taken >= 2100
        # a full buffer hands one evaluation over, and so does a check that has
        # not landed within 2 ms (Python waits for it): 4 ranks on 2 cores
        assert evals_taken >= 1500
        assert ops_left >= 1 and evals_left >= 2  # stream=; after tolist; after lazy
    assert all(t[0] == 0 and t[2] == 0 and t[4] == 0 for t in taken_p)
    assert seq_c == seq_p == [2100 + 16] * nranks
    assert state_c == state_p
    for rank_c, rank_p in zip(trace_c, trace_p, strict=True):
        assert {**rank_c, "ops": None} == {**rank_p, "ops": None}
        assert len(rank_c["ops"]) == len(rank_p["ops"])
        for op_c, op_p in zip(rank_c["ops"], rank_p["ops"], strict=True):
            assert op_c == op_p
    ops = trace_c[0]["ops"]
    assert [o["eval_note"] for o in ops[:5]] == [None] * 5  # timed by their mx.eval
    assert ops[5]["eval_arrays"] == 1 and ops[6]["eval_arrays"] == 2  # z, w, z: two arrays
    assert ops[-2]["eval_note"] == "lazy"  # never evaluated


@pytest.mark.cluster
def test_a_mismatch_reads_the_same_from_the_c_path(run, nranks):
    errors = []
    for on in (True, False):
        with pytest.raises(RankError) as info:
            run(TOGGLE.format(on=on) + "x = mx.ones(rank + 1)\nmx.eval(mx.distributed.all_sum(x))")
        run(TOGGLE.format(on=True))
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert f"has float32[{nranks}]" in errors[0]
    run("ok = mx.distributed.all_sum(mx.ones(2)).tolist()")  # nothing aborted
    assert mxnb.pull("ok") == [[float(nranks)] * 2] * nranks


#: A loop past what any record keeps: the op log's last 2,000 ops, the
#: recorder's first 5,000; long enough to fill the C path's buffer once
#: (16,384 notes: after op 8,192), with a few results kept alive along the
#: way, and a probe's look at op ``{look}`` (-1: none) while the op log's last
#: ops and the notes before them wait in C.
LONG = """
d = mx.distributed
x = mx.ones((4, 3)) * (rank + 1)
alive = []
mid = None
for i in range(12000):
    y = d.all_sum(x)
    mx.eval(y)
    if i % 3000 == 1:
        alive.append(y)
    if i == {look}:
        mid = _rt().oplog.state()
mx.eval(*alive)  # results of ops whose notes may still wait in C
state = _rt().oplog.state()
seq = _rt().hooks.seq
taken = [a - b for a, b in zip(_rt().fast.module.counts(), _before)]
"""


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("line", "look"),
    [("--no-check", 9000), ("--no-check", -1), ("--no-check --no-trace", 9000), ("", 9000)],
)
def test_ops_no_record_keeps_are_counted_not_recorded(ip, run, nranks, line, look):
    """Records the op log would push out at once and the recorder would drop
    are not made, and the op log, the trace and the reports read the same,
    whether the notes that waited in C are replayed at a probe's look
    mid-loop or at the cell's end.

    With checks on (""), an evaluation whose check has not landed within
    2 ms goes to Python, which takes the notes so far: batches are then
    too short to leave anything out, and the two paths must still agree."""
    ip.run_line_magic("mxdist", "restart")
    fast, python = _run_both(run, LONG.format(look=look), line)
    state_c, seq_c, taken_c, trace_c = fast
    state_p, seq_p, taken_p, trace_p = python
    if line:
        assert all(t[4] >= 1000 for t in taken_c), taken_c  # left out, counted
        # the full buffer (after op 8,192) kept the op log's last ops back,
        # and the notes before them waited in C for the next look
        assert all(t[5] >= 2000 for t in taken_c), taken_c
        assert all(t[6] >= 1 for t in taken_c), taken_c
    assert all(t[4] == 0 for t in taken_p)
    assert seq_c == seq_p == [12000] * nranks
    assert state_c == state_p
    assert len(state_c[1][0]["ops"]) == 2000
    for rank_c, rank_p in zip(trace_c, trace_p, strict=True):
        assert {**rank_c, "ops": None} == {**rank_p, "ops": None}
        assert rank_c["ops"] == rank_p["ops"]
    if "--no-trace" not in line:
        assert trace_c[0]["dropped"] == 12000 - 5000


@pytest.mark.cluster
def test_the_c_path_reads_the_clock_the_trace_reads(run):
    """Where time.perf_counter is CLOCK_MONOTONIC (Linux) the C path reads that
    clock itself: its times must land inside the cell, as Python's do."""
    run("mx.eval(mx.distributed.all_sum(mx.ones(4)))")  # the first op makes what later ones use
    run(
        TOGGLE.format(on=True) + "import time\n_t0 = time.perf_counter()\n"
        "for _ in range(3):\n    mx.eval(mx.distributed.all_sum(mx.ones(4)))\n"
        "took = time.perf_counter() - _t0\n"
        "taken = [a - b for a, b in zip(_rt().fast.module.counts(), _before)]\n",
        "--no-check",  # checked, an evaluation whose check is late goes to Python
    )
    taken = mxnb.pull("taken")
    assert all(t[0] == 3 and t[2] == 3 for t in taken), taken  # the C path took them
    took = max(mxnb.pull("took"))
    for report in mxnb.last_trace().reports:
        assert len(report["ops"]) == 3
        for op in report["ops"]:
            assert 0 <= op["t"] < took + 1.0  # since the cell began, just before _t0
            assert 0 <= op["call_s"] < took
            assert 0 < op["eval_s"] < took
