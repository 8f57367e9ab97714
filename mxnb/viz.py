"""Kernel-side control of tracing: recording on/off, fetching, showing.

The magic calls :func:`before_cell` and :func:`after_cell` around each
``%%mxdist`` cell.  Recording is on by default and costs only metadata and
array handles while the cell runs; values are read and encoded on the ranks
only when a trace is fetched (``--viz`` or :func:`mxnb.show`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mxnb.errors import MxnbError
from mxnb.trace import Trace

__all__ = ["FETCH_TIMEOUT", "after_cell", "before_cell", "fetch", "last_trace", "show"]

#: Seconds to wait for the ranks to hand over a trace.
FETCH_TIMEOUT = 60.0


@dataclass
class _State:
    """What this shell knows about tracing on its cluster."""

    cluster: Any = None
    #: rank -> whether recording is on there (unknown ranks: on, the engine default)
    recording: dict[int, bool] = field(default_factory=dict)
    targets: list[int] = field(default_factory=list)
    recorded: bool = False
    trace: Trace | None = None


def _state(magics: Any) -> _State:
    st = getattr(magics, "_mxnb_viz", None)
    if st is None:
        st = _State()
        magics._mxnb_viz = st
    return st


def _apply(view: Any, fn: Any, *args: Any, timeout: float) -> list[Any]:
    ar = view.apply_async(fn, *args)
    try:
        return list(ar.get(timeout=timeout))
    except TimeoutError:
        raise MxnbError(
            f"the ranks did not answer within {timeout:g} s (still busy with an earlier cell?)"
        ) from None


def before_cell(magics: Any, cluster: Any, view: Any, record: bool) -> None:
    """Switch recording on the cell's ranks, only where it must change."""
    from mxnb.engine.trace import set_recording

    st = _state(magics)
    if st.cluster is not cluster:
        st.cluster, st.recording, st.trace = cluster, {}, None
    change = [r for r in view.targets if st.recording.get(r, True) != record]
    if change:
        sub = cluster.client[change]
        _apply(sub, set_recording, record, timeout=10.0)
        st.recording.update(dict.fromkeys(change, record))
    st.targets, st.recorded, st.trace = list(view.targets), record, None


def fetch(view: Any, timeout: float = FETCH_TIMEOUT) -> Trace:
    """The last cell's trace from every rank of ``view``."""
    from mxnb.engine.trace import collect

    return Trace(_apply(view, collect, timeout=timeout))


def after_cell(magics: Any, view: Any, result: Any, show: bool) -> None:
    """With ``--viz``: fetch the trace and display it (only if every rank finished)."""
    if not show:
        return
    if result.unfinished or result.interrupted or result.timed_out:
        print("mxdist: no trace shown: some ranks have not finished the cell")
        return
    st = _state(magics)
    st.trace = fetch(view)
    from IPython.display import display

    from mxnb.widgets import TraceWidget

    display(TraceWidget(st.trace))


def last_trace(magics: Any | None = None) -> Trace:
    """The trace of the last ``%%mxdist`` cell (fetched from the ranks if needed)."""
    if magics is None:
        from mxnb import _magics

        magics = _magics()
    cluster = getattr(magics, "cluster", None)
    st = _state(magics) if magics is not None else _State()
    if cluster is None or not cluster.running or st.cluster is not cluster or not st.targets:
        raise MxnbError("no traced cell yet: run a %%mxdist cell first")
    if not st.recorded:
        raise MxnbError("the last %%mxdist cell ran with --no-trace: nothing was recorded")
    if st.trace is None:
        st.trace = fetch(cluster.client[st.targets])
    return st.trace


def show(trace: Trace | None = None) -> None:
    """Display the widget for ``trace`` (default: the last ``%%mxdist`` cell's)."""
    from IPython.display import display

    from mxnb.widgets import TraceWidget

    display(TraceWidget(trace if trace is not None else last_trace()))
