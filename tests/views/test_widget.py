"""The trace data model and its renderings: text, widget state, HTML export.

Built from hand-made rank reports, so every case (a rank that disagrees, a
transfer, an op never evaluated, a large array) is known exactly.  The
picture itself is checked in ``test_picture.py``.
"""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from typing import Any

import nbformat
import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers
from nbconvert.filters.widgetsdatatypefilter import WIDGET_STATE_MIMETYPE as WIDGET_STATE
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

from mxnb.protocol.snapshot import MAX_BYTES, snapshot_size
from mxnb.trace import Trace
from mxnb.trace.text import timing_text
from mxnb.views.widget import JS_PARTS, LIVE_NOTE, TraceWidget
from trace_reports import op, report

X = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(2)]
SUM = X[0] + X[1]
BAD = np.array([0, 3, 99, 9], np.float32)


def sample_trace() -> Trace:
    """all_sum where rank 1 got garbage; a send 0 -> 1; an all_max never evaluated.

    Times: rank 0 evaluated its all_sum with another op and an array in one
    mx.eval, rank 1 only inside a larger expression; the send was started with
    mx.async_eval.
    """
    reps = []
    for r in range(2):
        timing: dict[str, Any] = (
            {"eval_s": 0.21, "eval_ops": 2, "eval_arrays": 3}
            if r == 0
            else {"eval_s": None, "note": "indirect"}
        )
        y = SUM if r == 0 else BAD
        ops = [op(1, "all_sum", r, X[r], y, line=2, code="y = all_sum(x)", **timing)]
        if r == 0:
            ops.append(
                op(2, "send", 0, X[0], X[0], peer=1, line=3, code="s = send(x, 1)", eval_s=None)
                | {"eval_note": "async", "eval_by": "mx.async_eval"}
            )
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
  rank 0: float32 (4,) -> float32 (4,): [0 1 2 3] -> [0 3 6 9] | \
evaluated in 210 ms by mx.eval (with 1 other op and 1 other array)
  rank 1: float32 (4,) -> float32 (4,): [0 2 4 6] -> [0 3 99 9] (expected [0 3 6 9]) | \
not timed: evaluated as part of a larger expression
  !! rank 1 holds a wrong result after all_sum: expected the sum of the ranks' inputs
#2 send/recv on world (ranks 0, 1), line 3: s = send(x, 1)
  rank 0 -> rank 1: float32 (4,)
  rank 0: float32 (4,) -> float32 (4,): [0 1 2 3] -> \
sent (send returns its input; rank 1 holds the message) | \
not timed: mx.async_eval returns before the transfer ends
  rank 1: - -> float32 (4,): - -> [0 1 2 3] | evaluated in 3.2 ms by mx.eval
#3 all_max on world (ranks 0, 1), line 6: z = all_max(x)
  rank 0: float32 (4,) -> float32 (4,): [0 1 2 3] -> (not evaluated by the cell)
  rank 1: float32 (4,) -> float32 (4,): [0 2 4 6] -> (not evaluated by the cell)"""


def test_text_summary_is_exact():
    assert sample_trace().text() == EXPECTED_TEXT


def test_the_odd_rank_out_is_the_one_highlighted():
    n = 4
    reps = [
        report(r, [op(1, "all_sum", r, X[0], BAD if r == 2 else X[0] * n, n=n)], n=n)
        for r in range(n)
    ]
    t = Trace(reps)
    assert t.steps[0].mismatch == [2]
    assert "!! rank 2 holds a wrong result after all_sum: expected the sum" in t.text()
    assert "-> [0 3 99 9] (expected [0 4 8 12])" in t.text()
    assert t.steps[0].inputs_note == ""  # same dtype and shape everywhere


def test_collective_inputs_of_different_dtypes_are_named():
    n = 4
    xs = [X[0].astype(np.int32 if r == 3 else np.float32) for r in range(n)]
    t = Trace([report(r, [op(1, "all_max", r, xs[r], xs[r], n=n)], n=n) for r in range(n)])
    note = "inputs differ: rank 3 passed int32 (4,); ranks 0-2 passed float32 (4,)"
    assert t.steps[0].inputs_note == note
    assert f"  !! {note}" in t.text()
    assert TraceWidget(t).trace["steps"][0]["inputs_note"] == note


@pytest.mark.parametrize(
    ("m", "text"),
    [
        ({"eval_s": 0.0032, "eval_by": "mx.eval", "eval_ops": 1, "eval_arrays": 1},
         "evaluated in 3.2 ms by mx.eval"),
        ({"eval_s": 0.21, "eval_by": ".item()", "eval_ops": 3, "eval_arrays": 3},
         "evaluated in 210 ms by .item() (with 2 other ops)"),
        ({"eval_s": 1.5, "eval_by": "mx.eval", "eval_ops": 1, "eval_arrays": 3},
         "evaluated in 1.5 s by mx.eval (with 2 other arrays)"),
        ({"eval_s": 4.2e-5, "eval_by": "mx.eval", "eval_ops": 1, "eval_arrays": 1},
         "evaluated in 0.042 ms by mx.eval"),
        ({"eval_s": None, "eval_note": "indirect"},
         "not timed: evaluated as part of a larger expression"),
        ({"eval_s": None, "eval_note": "async"},
         "not timed: mx.async_eval returns before the transfer ends"),
        ({"eval_s": None, "eval_note": "lazy"}, "not evaluated"),
        ({"eval_s": None, "eval_note": "unknown"}, "not timed"),
        ({"eval_s": None, "eval_note": "vmapped"},
         "not timed: MLX runs its batch with the result of mx.vmap"),
        ({}, "not timed"),
    ],
)  # fmt: skip
def test_times_say_what_they_measure(m, text):
    assert timing_text(m) == text


def test_widget_panels_carry_call_and_evaluation_times():
    panels = TraceWidget(sample_trace()).trace["steps"][0]["panels"]
    assert panels[0]["call_ms"] == 0.02
    assert panels[0]["time"].startswith("evaluated in 210 ms by mx.eval (with 1 other op")
    assert panels[1]["time"] == "not timed: evaluated as part of a larger expression"
    never = TraceWidget(sample_trace()).trace["steps"][2]["panels"][0]  # all_max, lazy
    assert "time" not in never  # not evaluated: no timing line at all


def test_a_compiled_op_has_no_call_time_and_says_why_no_values():
    """An op run inside mx.compile's graph: no Python call of its own, no values."""
    inside = {"before": "compiled", "after": "compiled"}
    reps = []
    for r in range(2):
        m = op(1, "all_sum", r, np.ones(3, np.float32), np.ones(3, np.float32), states=inside)
        m["call_s"] = None
        reps.append(report(r, [m]))
    widget = TraceWidget(Trace(reps))
    panel = widget.trace["steps"][0]["panels"][0]
    assert panel["call_ms"] is None and panel["time"].startswith("evaluated in")
    words = widget.trace["words"]["states"]
    assert words["compiled"] == "(inside mx.compile: not visible to Python)"


def test_a_vmapped_op_says_what_python_held():
    inside = {"before": "vmapped", "after": "vmapped"}
    x = np.ones((3, 2), np.float32)
    widget = TraceWidget(Trace([report(r, [op(1, "all_sum", r, x, x, states=inside)])
                                for r in range(2)]))  # fmt: skip
    words = widget.trace["words"]["states"]
    assert words["vmapped"] == "(inside mx.vmap: Python saw one example, MLX ran the batch)"
    assert widget.trace["steps"][0]["order_note"] == ""


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
    assert panel["after"]["dshape"] == [171, 171] and not panel["after"]["exact"]


def test_widget_is_shown_after_a_static_picture_and_summary(ip):
    """display(widget): a PNG output, a text output, then the widget itself.

    The widget's own bundle carries no picture: an export would then show it
    twice wherever no widget state is stored.
    """
    from IPython.utils.capture import capture_output

    w = TraceWidget(sample_trace())
    with capture_output() as cap:
        ip.display_formatter.format(w)  # what a cell's last value goes through
        w._ipython_display_()
    pic, text, live = [o.data for o in cap.outputs][:3]
    assert len(cap.outputs) == 6  # both ways gave the same three outputs
    assert set(pic) == {"image/png", "text/plain"}  # no HTML: viewers pick the PNG
    assert base64.b64decode(pic["image/png"]) == w.png()
    assert pic["image/png"].endswith(w.png_tail) and len(w.png_tail) == 64
    assert pic["text/plain"] == "<mxnb trace picture: 3 ops>"
    assert text == {"text/plain": EXPECTED_TEXT}
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert live["text/plain"] == LIVE_NOTE and "image/png" not in live
    assert repr(w) == EXPECTED_TEXT
    assert "step" not in w.keys  # what is selected stays in the browser


class _Html(HTMLParser):
    """The <img> sources, <pre> texts and widget-view scripts of an exported page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.pres: list[str] = []
        self.views = 0
        self._pre: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "pre":
            self._pre = []
        elif tag == "script" and a.get("type") == "application/vnd.jupyter.widget-view+json":
            self.views += 1

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None


def parse_html(html: str) -> _Html:
    page = _Html()
    page.feed(html)
    return page


def widget_notebook(ip: Any, state: bool) -> tuple[nbformat.NotebookNode, TraceWidget]:
    """A notebook with the outputs of display(widget), with or without widget state."""
    from IPython.utils.capture import capture_output

    w = TraceWidget(sample_trace())
    with capture_output() as cap:
        w._ipython_display_()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%%mxdist --viz\n...")
    cell.outputs = [nbformat.v4.new_output("display_data", data=o.data) for o in cap.outputs]
    nb.cells = [cell]
    if state:  # the shape nbclient stores (store_widget_state=True, its default)
        kept = {k: v for k, v in w.get_state().items() if k != "trace"}
        model = {"model_name": w._model_name, "model_module": w._model_module}
        model |= {"model_module_version": w._model_module_version, "state": kept}
        nb.metadata["widgets"] = {
            WIDGET_STATE: {"state": {w.model_id: model}, "version_major": 2, "version_minor": 0}
        }
    return nb, w


@pytest.mark.parametrize("state", [False, True], ids=["no-state", "state"])
@pytest.mark.parametrize("template", ["lab", "classic"])
def test_html_export_shows_picture_and_summary(ip, template, state):
    """With or without stored widget state, the export shows the PNG and the text.

    With state, nbconvert renders the widget view (an empty element for a
    widget manager from a CDN): the separate picture and text outputs must
    still be there.  Without, the widget output falls back to its note.
    """
    from nbconvert import HTMLExporter

    nb, w = widget_notebook(ip, state)
    html, _ = HTMLExporter(template_name=template).from_notebook_node(nb)
    page = parse_html(html)
    png = base64.b64encode(w.png()).decode()
    assert page.imgs == [f"data:image/png;base64,{png}"]
    assert EXPECTED_TEXT in page.pres
    assert page.views == (1 if state else 0)
    assert (LIVE_NOTE in page.pres) is (not state)
    # GitHub and other nbconvert-like viewers: the picture output picks image/png
    pick = WidgetsDataTypeFilter(notebook_metadata={"": nb.metadata})
    assert [pick(o.data) for o in nb.cells[0].outputs][:2] == [["image/png"], ["text/plain"]]


@pytest.mark.parametrize("name", [*(f"js/{n}" for n in JS_PARTS), "widget.css"])
def test_front_end_files_ship_with_the_package(name):
    from importlib.resources import files

    text = (files("mxnb.views") / name).read_text()
    assert text.strip()
    if name.endswith(".js"):
        assert "import " not in text  # no bundler, no dependencies
        # one ES module once concatenated: only the last part exports
        assert ("export " in text) is (name == f"js/{JS_PARTS[-1]}")


def test_the_widget_ships_expected_values_and_the_robust_scale():
    """Garbage in rank 1's result: it is told what it should hold, and the colour
    scale is the picture's clipped one, so the other panels' bars stay visible."""
    garbage = np.array([0, -2139095036, 6, 9], np.float32)
    t = Trace([report(r, [op(1, "all_sum", r, X[r], SUM if r == 0 else garbage)])
               for r in range(2)])  # fmt: skip
    (step,) = TraceWidget(t).trace["steps"]
    assert step["mismatch"] == [1]
    assert [p.get("expected_text") for p in step["panels"]] == [None, "[0 3 6 9]"]
    assert (step["scale"]["lo"], step["scale"]["hi"]) == (0.0, 9.0)
    assert step["scale"]["note"].startswith("colour scale clipped to [0, 9]")
