"""The trace data model and its renderings: text, widget state, PNG, HTML export.

Built from hand-made rank reports, so every case (a rank that disagrees, a
transfer, an op never evaluated, a large array) is known exactly.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

import nbformat
import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers

from mxnb.snapshot import MAX_BYTES, encode, snapshot_size
from mxnb.trace import Trace
from mxnb.widgets import TraceWidget
from mxnb.widgets.png import COLORMAP, RED, render_trace


def op(
    seq: int,
    name: str,
    rank: int,
    x: np.ndarray | None,
    y: np.ndarray | None,
    *,
    n: int = 2,
    peer: int | None = None,
    line: int = 1,
    code: str = "",
    states: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One rank's record of one op, as mxnb.engine.trace.collect ships it."""
    m: dict[str, Any] = {
        "seq": seq,
        "op": name,
        "group": "world",
        "group_rank": rank,
        "group_size": n,
        "peer": peer,
        "site": {"file": f"/tmp/cell-{rank}.py", "line": line, "code": code},
        "t": 0.001 * seq,
        "duration": 2e-5,
        "in": None if x is None else {"shape": list(x.shape), "dtype": str(x.dtype)},
        "out": None if y is None else {"shape": list(y.shape), "dtype": str(y.dtype)},
        "states": dict(states or {}),
    }
    for side, a in (("before", x), ("after", y)):
        if a is not None and m["states"].get(side, "ok") == "ok":
            m[side] = encode(a, digest=side == "after")
            m["states"][side] = "ok"
    return m


def report(rank: int, ops: list[dict[str, Any]], n: int = 2) -> dict[str, Any]:
    return {
        "rank": rank,
        "size": n,
        "enabled": True,
        "cell": True,
        "ops": ops,
        "groups": {"world": [rank, n]},
        "dropped": 0,
    }


X = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(2)]
SUM = X[0] + X[1]
BAD = np.array([0, 3, 99, 9], np.float32)


def sample_trace() -> Trace:
    """all_sum where rank 1 got garbage; a send 0 -> 1; an all_max never evaluated."""
    reps = []
    for r in range(2):
        ops = [op(1, "all_sum", r, X[r], SUM if r == 0 else BAD, line=2, code="y = all_sum(x)")]
        if r == 0:
            ops.append(op(2, "send", 0, X[0], X[0], peer=1, line=3, code="s = send(x, 1)"))
        else:
            ops.append(
                op(2, "recv", 1, None, X[0], peer=0, line=5, code="s = recv((4,), f32, 0)")
                | {"states": {"before": "none", "after": "ok"}}
            )
        lazy = {"after": "lazy"}
        ops.append(op(3, "all_max", r, X[r], X[1], line=6, code="z = all_max(x)", states=lazy))
        reps.append(report(r, ops))
    return Trace(reps)


EXPECTED_TEXT = """\
mxnb trace: 3 ops on ranks 0, 1
#1 all_sum on world (ranks 0, 1), line 2: y = all_sum(x)
  rank 0: float32 (4,) -> float32 (4,): [0 1 2 3] -> [0 3 6 9]
  rank 1: float32 (4,) -> float32 (4,): [0 2 4 6] -> [0 3 99 9]
  !! ranks 0, 1 disagree after all_sum
#2 send/recv on world (ranks 0, 1), line 3: s = send(x, 1)
  rank 0 -> rank 1: float32 (4,)
  rank 0: float32 (4,) -> float32 (4,): [0 1 2 3] -> [0 1 2 3]
  rank 1: - -> float32 (4,): - -> [0 1 2 3]
#3 all_max on world (ranks 0, 1), line 6: z = all_max(x)
  rank 0: float32 (4,) -> float32 (4,): [0 1 2 3] -> (not evaluated by the cell)
  rank 1: float32 (4,) -> float32 (4,): [0 2 4 6] -> (not evaluated by the cell)"""


def test_text_summary_is_exact():
    assert sample_trace().text() == EXPECTED_TEXT


def test_the_odd_rank_out_is_the_one_highlighted():
    n = 4
    reps = [
        report(r, [op(1, "all_sum", r, X[0], BAD if r == 2 else SUM, n=n)], n=n) for r in range(n)
    ]
    t = Trace(reps)
    assert t.steps[0].mismatch == [2]
    assert "!! rank 2 disagree" in t.text()


def test_rounding_differences_are_not_disagreement():
    near = SUM * (1 + 1e-7)
    t = Trace([report(r, [op(1, "all_sum", r, X[r], SUM if r else near)]) for r in range(2)])
    assert t.steps[0].mismatch == []


def test_unmatched_send_and_wrong_dtype_are_noted():
    a = np.ones(4, np.float32)
    b = np.ones(4, np.int32)
    t = Trace(
        [
            report(0, [op(1, "send", 0, a, a, peer=1, line=1), op(2, "send", 0, a, a, peer=1)]),
            report(1, [op(1, "recv", 1, None, b, peer=0, line=2, states={"before": "none"})]),
        ]
    )
    notes = [tr.note for s in t.steps for tr in s.transfers]
    assert "sent float32 (4,) but received int32 (4,)" in notes
    assert "no matching recv on rank 1 in this cell" in notes


def test_empty_and_disabled_traces():
    assert "called no mx.distributed operation" in Trace([report(0, [])]).text()
    off = report(0, []) | {"enabled": False}
    assert Trace([off]).text() == "mxnb trace: recording was off for this cell (--no-trace)"


def test_widget_state_ships_arrays_as_binary_buffers():
    big = np.random.default_rng(1).standard_normal((4096, 4096)).astype(np.float32)
    t = Trace([report(r, [op(1, "all_sum", r, big, big * 2)]) for r in range(2)])
    w = TraceWidget(t)
    state, paths, buffers = _remove_buffers(w.get_state())
    assert len(buffers) == 4  # 2 ranks x (before, after)
    assert all(isinstance(b, bytes) and len(b) < MAX_BYTES for b in buffers)
    assert {tuple(p[-1:]) for p in paths} == {("data",)}
    meta = json.dumps(state["trace"])
    assert len(meta) < 5_000  # metadata only: no values as JSON numbers
    for r in range(2):
        for side in ("before", "after"):
            snap = t.steps[0].snap(r, side)[0]
            assert snapshot_size(snap) <= MAX_BYTES
            assert snap["shape"] == [4096, 4096] and not snap["exact"]
    panel = w.trace["steps"][0]["panels"][1]
    assert panel["after_text"].endswith("downsampled to 171x171")


def test_widget_bundle_has_text_and_png_fallbacks():
    w = TraceWidget(sample_trace())
    data, _meta = w._repr_mimebundle_()
    assert data["text/plain"] == EXPECTED_TEXT
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert repr(w) == EXPECTED_TEXT
    assert w.step == 0 and w.phase == "after"


def read_png(data: bytes) -> np.ndarray:
    """Decode the RGB, filter-0 PNGs that mxnb writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_shows_every_rank_and_marks_the_disagreeing_one():
    t = sample_trace()
    img = read_png(TraceWidget(t).png())
    np.testing.assert_array_equal(img, render_trace(t))
    assert img.shape[1] >= 2 * 2 * 56  # two ranks, before and after each
    reds = np.all(img == RED, axis=-1)
    assert reds.any()  # the frame of the disagreeing results
    ok = Trace([report(r, [op(1, "all_sum", r, X[r], SUM)]) for r in range(2)])
    assert not np.all(render_trace(ok) == RED, axis=-1).any()
    heat = Trace([report(0, [op(1, "all_sum", 0, np.eye(8), np.eye(8))], n=1)])
    colours = {tuple(c) for c in render_trace(heat).reshape(-1, 3)}
    assert tuple(COLORMAP[0]) in colours and tuple(COLORMAP[-1]) in colours


def test_html_export_without_kernel_shows_the_picture():
    """nbconvert drops a widget whose state was not saved and uses the PNG."""
    from nbconvert import HTMLExporter

    w = TraceWidget(sample_trace())
    data, _ = w._repr_mimebundle_()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%%mxdist --viz\n...")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nb.cells = [cell]
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert f'src="data:image/png;base64,{data["image/png"]}"' in html
    assert "widget-view+json" not in html


@pytest.mark.parametrize("name", ["trace_widget.js", "trace_widget.css"])
def test_front_end_files_ship_with_the_package(name):
    from importlib.resources import files

    text = (files("mxnb.widgets") / name).read_text()
    assert text.strip()
    if name.endswith(".js"):
        assert "export default { render }" in text
        assert "import " not in text  # no bundler, no dependencies
