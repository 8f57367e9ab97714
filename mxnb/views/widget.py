"""The trace widget: the cell's timeline and, per op, every rank's input and result.

An anywidget: the front end is plain ES modules in ``js/`` (values, timeline,
op view, ring, widget; joined into one module, no build step), which works in
JupyterLab 4 and Notebook 7.  The view-model travels as one synced dict whose
array snapshots are ``bytes``, which ipywidgets sends as binary buffers; what
is selected stays in the browser.  A ``text/plain`` summary and a static
PNG go with it, so a notebook viewed without a kernel (GitHub,
``jupyter nbconvert --to html``) still shows the trace.

The static views are *separate outputs*, displayed just before the widget
(:meth:`TraceWidget._ipython_display_`): a PNG (``image/png`` with a one-line
``text/plain``) and the text summary (``text/plain``).  They cannot live in the
widget's own MIME bundle: nbconvert's HTML templates prefer the widget view
whenever the notebook stores widget state (nbclient stores it by default),
and then render only an empty element that a widget manager loaded from a
CDN would fill, which offline never happens.  A separate ``image/png`` output
is rendered as an ``<img>`` with the data inline by every HTML template and by
GitHub.  When the live widget renders (JupyterLab, Notebook 7, or an export
with state and network), its front end hides those two outputs, recognising
them by the PNG's last bytes and the summary's length and ends.
"""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import anywidget
import numpy as np
import traitlets

from mxnb.protocol.snapshot import EXACT_LIMIT
from mxnb.trace import Trace
from mxnb.trace.ring import HONESTY, KEY, RingReplay
from mxnb.trace.text import ABSENT_TEXT, SAMPLED_TEXT, STATE_TEXT, TAG_TEXT, count
from mxnb.trace.timeline import LANE_STATES
from mxnb.trace.view import PanelView, StepView, TraceView, trace_view
from mxnb.views.palette import COLORMAP, RANK_COLORS, STATES, hex_color
from mxnb.views.scale import op_scale

__all__ = ["TraceWidget", "widget_state"]

_HERE = pathlib.Path(__file__).parent
#: The front end's parts, in order; concatenated they are one plain ES module.
JS_PARTS = ("values.js", "timeline.js", "opview.js", "ring.js", "widget.js")


def _front_end() -> str:
    return "\n".join((_HERE / "js" / name).read_text() for name in JS_PARTS)


#: Characters of the PNG's base64 the front end compares (the last IDAT bytes, its
#: CRC and IEND).
PNG_TAIL = 64
#: The widget output's own text: where no widget manager runs, the outputs
#: just before it (picture and summary) already show the trace.
LIVE_NOTE = (
    "(interactive mxnb trace widget: needs a running kernel;"
    " the picture and summary above show the same trace)"
)


def _panel(p: PanelView | None) -> dict[str, Any] | None:
    """One rank's row, kept small (a 1,000-op cell has thousands): a side without
    values is sent as its state, which the front end words from ``words.states``."""
    if p is None:
        return None
    panel: dict[str, Any] = {"in": p.type_text("before"), "out": p.type_text("after")}
    if p.op not in ("all_sum", "all_gather", "all_max", "all_min", "sum_scatter"):
        panel["op"] = p.op
    panel["call_ms"] = p.call_ms
    if p.timed:
        panel["time"] = p.time_text
    if p.expected is not None:
        panel["expected"] = p.expected.snap
        panel["expected_text"] = p.expected.text
    for name in ("before", "after"):
        side = p.side(name)
        if side.snap is not None:
            panel[name] = side.snap
        else:
            panel[f"{name}_state"] = side.state
            if side.state == "sent":  # the one state whose words name a rank
                panel[f"{name}_text"] = side.text
    return panel


def _ring(ring: RingReplay | None) -> dict[str, Any] | None:
    """The ring step-through as plain lists: per round, what each rank sends and holds,
    and whose inputs each chunk already contains."""
    if ring is None:
        return None

    def held(chunks: dict[int, list[np.ndarray | None]]) -> list[list[list[float] | None]]:
        return [[None if c is None else _numbers(c) for c in chunks[r]] for r in ring.ranks]

    return {
        "ranks": ring.ranks,
        "honesty": HONESTY,
        "key": KEY,
        "titles": ring.titles(),
        "start": held(ring.start),
        "start_holders": [ring.start_holders[r] for r in ring.ranks],
        "rounds": [
            {
                "phase": rnd.phase,
                "number": rnd.number,
                "passes": [[p.src, p.dst, p.chunk] for p in rnd.passes],
                "held": held(rnd.after),
                "holders": [rnd.holders[r] for r in ring.ranks],
            }
            for rnd in ring.rounds
        ],
    }


def _numbers(a: np.ndarray) -> list[float]:
    return [float(v) if np.isfinite(v) else str(v) for v in np.asarray(a, np.float64).ravel()]


def _step_state(step: StepView, ranks: list[int]) -> dict[str, Any]:
    prov = step.provenance
    return {
        "index": step.index,
        "op": step.op,
        "name": step.name,
        "head": step.head,
        "group_text": step.group_text,
        "members": step.members,
        "site": step.site_text,
        "mismatch": step.mismatch,
        "mismatch_text": step.mismatch_text,
        "inputs_note": step.inputs_note,
        "order_note": step.order_note,
        "transfers": [
            {"src": t.src, "dst": t.dst, "what": t.what, "note": t.note, "drawn": t.drawn}
            for t in step.transfers
        ],
        "lanes": {str(r): s for r, s in step.lanes.items()},
        "blocks": prov.blocks if prov else [],
        "winners": prov.winners if prov else None,
        "ring": _ring(step.ring),
        "panels": [_panel(step.panels.get(r)) for r in ranks],
        "scale": _scale(step),
    }


def _scale(step: StepView) -> dict[str, Any]:
    """The picture's colour scale: garbage values are clipped and named, not blanking it."""
    sc = op_scale(step)
    return {"lo": float(sc.lo), "hi": float(sc.hi), "note": sc.note}


def _timeline(view: TraceView) -> dict[str, Any]:
    tl = view.timeline
    return {
        "columns": [
            {"steps": list(c.steps), "name": c.name, "site": c.site, "state": c.state}
            for c in tl.columns
        ],
        "folds": [[f.first, f.period, f.times] for f in tl.folds],
        "shown": [[c, tl.folds.index(f) if f else -1] for c, f in tl.shown()],
    }


#: Timeline columns the text output writes out (the widget and ``trace.text()``: all).
SUMMARY_COLUMNS = 60


def widget_state(view: TraceView) -> dict[str, Any]:
    """The synced state: JSON metadata plus snapshot ``bytes`` (sent as buffers)."""
    summary = view.text(SUMMARY_COLUMNS)
    return {
        "ranks": view.ranks,
        "reported": view.reported,
        # each lane's host when the ranks span hosts ("" for none): shown by its chip
        "hosts": [view.hosts.get(r, "") for r in view.ranks],
        "enabled": view.enabled,
        "headline": view.headline,
        # enough to recognise the text output shown before the widget, without a copy of it
        "summary_len": len(summary.strip()),
        "summary_ends": [summary.strip()[:200], summary.strip()[-200:]],
        "palette": {
            "ranks": [hex_color(c) for c in RANK_COLORS],
            "values": [hex_color(c) for c in COLORMAP],
            "states": {k: [hex_color(f), hex_color(i), m] for k, (f, i, m) in STATES.items()},
        },
        # lane states as a list: their order (worst first) is the legend's
        "words": {
            "states": STATE_TEXT,
            "lanes": list(LANE_STATES.items()),
            "absent": ABSENT_TEXT,
            "tags": TAG_TEXT,
            "sampled": {**SAMPLED_TEXT, "limit": EXACT_LIMIT},
        },
        "timeline": _timeline(view),
        "steps": [_step_state(s, view.ranks) for s in view.steps],
        "notes": view.notes,
    }


class TraceWidget(anywidget.AnyWidget):
    """What every rank held before and after each ``mx.distributed`` op of a cell."""

    _esm = _front_end()
    _css = _HERE / "widget.css"

    trace = traitlets.Dict().tag(sync=True)
    #: The end of the static PNG's base64 text: the front end hides that output.
    png_tail = traitlets.Unicode("").tag(sync=True)

    def __init__(self, trace: Trace, **kwargs: Any) -> None:
        self._trace = trace
        self._view = trace_view(trace)
        self._png: bytes | None = None
        super().__init__(trace=widget_state(self._view), **kwargs)

    @property
    def data(self) -> Trace:
        """The :class:`~mxnb.trace.Trace` this widget shows."""
        return self._trace

    def png(self) -> bytes:
        """The static picture of the trace (PNG bytes)."""
        from mxnb.views.picture import trace_png  # Pillow: loaded only when drawn

        if self._png is None:
            self._png = trace_png(self._view)
        return self._png

    def static_outputs(self) -> list[dict[str, str]]:
        """The MIME bundles shown before the widget: the picture, then the summary."""
        png = base64.b64encode(self.png()).decode("ascii")
        self.png_tail = png[-PNG_TAIL:]
        label = f"<mxnb trace picture: {count(len(self._trace.steps), 'op')}>"
        return [
            {"image/png": png, "text/plain": label},
            {"text/plain": self._view.text(SUMMARY_COLUMNS)},
        ]

    def __repr__(self) -> str:
        return self._view.text()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data)
        data["text/plain"] = LIVE_NOTE
        return data, meta

    def _ipython_display_(self) -> None:
        """``display(widget)`` and a cell's last value: static outputs, then the widget."""
        from IPython.display import display

        for data in self.static_outputs():
            display(data, raw=True)
        bundle = self._repr_mimebundle_()
        if bundle is not None:
            data, meta = bundle
            display(data, metadata=meta, raw=True)
