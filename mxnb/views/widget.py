"""The trace widget: per-rank panels, before/after, step by step, in the browser.

An anywidget: the front end is the plain ES module ``widget.js`` next to
this file (no build step), which works in JupyterLab 4 and Notebook 7.  The
trace travels as one synced dict whose array snapshots are ``bytes``, which
ipywidgets sends as binary buffers.  A ``text/plain`` summary and a static
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
them by the PNG's last bytes and the exact summary text.
"""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import anywidget
import traitlets

from mxnb.trace import Trace
from mxnb.trace.text import STATE_TEXT, count
from mxnb.trace.view import PanelView, StepView, TraceView, trace_view
from mxnb.views.scale import op_scale

__all__ = ["TraceWidget", "widget_state"]

_HERE = pathlib.Path(__file__).parent
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
    if p is None:
        return None
    panel: dict[str, Any] = {
        "rank": p.rank,
        "op": p.op,
        "in": p.type_text("before"),
        "out": p.type_text("after"),
        # the call only builds the lazy graph; the evaluation moves the data
        "call_ms": p.call_ms,
        "eval_ms": p.eval_ms,
        "time_text": p.time_text,
        "t_ms": p.t_ms,
    }
    panel["expected_text"] = p.expected.text if p.expected else None
    for name in ("before", "after"):
        side = p.side(name)
        panel[name] = side.snap
        panel[f"{name}_state"] = side.state
        panel[f"{name}_text"] = side.text
    return panel


def _step_state(step: StepView, ranks: list[int]) -> dict[str, Any]:
    return {
        "index": step.index,
        "op": step.op,
        "group": step.group,
        "group_text": step.group_text,
        "members": step.members,
        "site": step.site_text,
        "agree": step.agree,
        "mismatch": step.mismatch,
        "mismatch_text": step.mismatch_text,
        "inputs_note": step.inputs_note,
        "transfers": [
            {"src": t.src, "dst": t.dst, "matched": t.matched, "what": t.what, "note": t.note}
            for t in step.transfers
        ],
        "panels": [_panel(step.panels.get(r)) for r in ranks],
        "scale": _scale(step),
    }


def _scale(step: StepView) -> dict[str, Any]:
    """The picture's colour scale: garbage values are clipped and named, not blanking it."""
    sc = op_scale(step)
    return {"lo": float(sc.lo), "hi": float(sc.hi), "note": sc.note}


def widget_state(view: TraceView) -> dict[str, Any]:
    """The synced state: JSON metadata plus snapshot ``bytes`` (sent as buffers)."""
    return {
        "ranks": view.ranks,
        "reported": view.reported,
        "enabled": view.enabled,
        "summary": view.text(),
        "states": STATE_TEXT,
        "steps": [_step_state(s, view.ranks) for s in view.steps],
        "notes": view.notes,
    }


class TraceWidget(anywidget.AnyWidget):
    """What every rank held before and after each ``mx.distributed`` op of a cell."""

    _esm = _HERE / "widget.js"
    _css = _HERE / "widget.css"

    trace = traitlets.Dict().tag(sync=True)
    #: Shown op (0-based) and side; the browser and Python can both set them.
    step = traitlets.Int(0).tag(sync=True)
    phase = traitlets.Unicode("after").tag(sync=True)
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
        return [{"image/png": png, "text/plain": label}, {"text/plain": self._view.text()}]

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
