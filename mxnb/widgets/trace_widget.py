"""The trace widget: per-rank panels, before/after, step by step, in the browser.

An anywidget: the front end is the plain ES module ``trace_widget.js`` next to
this file (no build step), which works in JupyterLab 4 and Notebook 7.  The
trace travels as one synced dict whose array snapshots are ``bytes``, which
ipywidgets sends as binary buffers.  The MIME bundle also carries a
``text/plain`` summary and a static PNG, so a notebook viewed without a
kernel (GitHub, ``jupyter nbconvert --to html``) still shows the trace.
"""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import anywidget
import traitlets

from mxnb.trace import STATE_TEXT, Step, Trace, describe_value, shape_text

__all__ = ["TraceWidget", "widget_state"]

_HERE = pathlib.Path(__file__).parent


def _io_text(d: dict[str, Any] | None) -> str:
    return f"{d['dtype']} {shape_text(d['shape'])}" if d else "-"


def _panel(step: Step, rank: int) -> dict[str, Any] | None:
    m = step.ranks.get(rank)
    if m is None:
        return None
    panel: dict[str, Any] = {
        "rank": rank,
        "op": m["op"],
        "in": _io_text(m.get("in")),
        "out": _io_text(m.get("out")),
        "duration_ms": round(m["duration"] * 1e3, 4),
        "t_ms": round(m["t"] * 1e3, 3),
    }
    for side in ("before", "after"):
        snap, state = step.snap(rank, side)
        panel[side] = snap if state == "ok" else None
        panel[f"{side}_state"] = state
        panel[f"{side}_text"] = describe_value(snap, state)
    return panel


def _step_state(step: Step, ranks: list[int]) -> dict[str, Any]:
    return {
        "index": step.index,
        "op": step.op,
        "group": step.group,
        "group_text": step.group_text(),
        "members": step.members,
        "site": step.site_text(),
        "agree": step.op in ("all_sum", "all_gather", "all_max", "all_min"),
        "mismatch": step.mismatch,
        "transfers": [
            {"src": t.src, "dst": t.dst, "matched": t.matched, "what": t.what, "note": t.note}
            for t in step.transfers
        ],
        "panels": [_panel(step, r) for r in ranks],
    }


def widget_state(trace: Trace) -> dict[str, Any]:
    """The synced state: JSON metadata plus snapshot ``bytes`` (sent as buffers)."""
    ranks = list(range(trace.nranks)) or trace.ranks
    return {
        "ranks": ranks,
        "reported": trace.ranks,
        "enabled": trace.enabled,
        "summary": trace.text(),
        "states": STATE_TEXT,
        "steps": [_step_state(s, ranks) for s in trace.steps],
    }


class TraceWidget(anywidget.AnyWidget):
    """What every rank held before and after each ``mx.distributed`` op of a cell."""

    _esm = _HERE / "trace_widget.js"
    _css = _HERE / "trace_widget.css"

    trace = traitlets.Dict().tag(sync=True)
    #: Shown op (0-based) and side; the browser and Python can both set them.
    step = traitlets.Int(0).tag(sync=True)
    phase = traitlets.Unicode("after").tag(sync=True)

    def __init__(self, trace: Trace, **kwargs: Any) -> None:
        self._trace = trace
        super().__init__(trace=widget_state(trace), **kwargs)

    @property
    def data(self) -> Trace:
        """The :class:`~mxnb.trace.Trace` this widget shows."""
        return self._trace

    def png(self) -> bytes:
        """The static picture of the trace (PNG bytes)."""
        from mxnb.widgets.png import trace_png

        return trace_png(self._trace)

    def __repr__(self) -> str:
        return self._trace.text()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data)
        data["text/plain"] = self._trace.text()
        data["image/png"] = base64.b64encode(self.png()).decode("ascii")
        return data, meta
