"""Tracing seen from the kernel: recording on or off per cell, fetching, showing.

The session calls :meth:`Tracing.before_cell` and :meth:`Tracing.after_cell`
around each ``%%mxdist`` cell.  Recording is on by default and costs only
metadata and array handles while the cell runs; values are read and encoded
on the ranks only when a trace is fetched (``--viz`` or :func:`mxnb.show`).
"""

from __future__ import annotations

from typing import Any

from mxnb.errors import MxnbError
from mxnb.kernel import remote
from mxnb.trace import Trace

__all__ = ["FETCH_TIMEOUT", "Tracing", "fetch_trace"]

#: Seconds to wait for the ranks to hand over a trace.
FETCH_TIMEOUT = 60.0


def fetch_trace(view: Any, timeout: float = FETCH_TIMEOUT) -> Trace:
    """The last cell's trace from every rank of ``view``."""
    return Trace(remote.collect_traces(view, timeout))


class Tracing:
    """What the session knows about recording on its cluster's ranks."""

    def __init__(self) -> None:
        self.cluster: Any = None
        #: rank -> whether recording is on there (unknown ranks: on, the rank default)
        self.recording: dict[int, bool] = {}
        self.targets: list[int] = []
        self.recorded = False
        self.trace: Trace | None = None

    def before_cell(self, cluster: Any, view: Any, record: bool) -> None:
        """Switch recording on the cell's ranks, only where it must change."""
        if self.cluster is not cluster:
            self.cluster, self.recording, self.trace = cluster, {}, None
        change = [r for r in view.targets if self.recording.get(r, True) != record]
        if change:
            remote.set_recording(cluster.client[change], record)
            self.recording.update(dict.fromkeys(change, record))
        self.targets, self.recorded, self.trace = list(view.targets), record, None

    def after_cell(self, view: Any, result: Any, show: bool) -> None:
        """With ``--viz``: fetch the trace and display it (only if every rank finished)."""
        if not show:
            return
        if result.unfinished or result.interrupted or result.timed_out:
            print("mxdist: no trace shown: some ranks have not finished the cell")
            return
        self.trace = fetch_trace(view)
        from IPython.display import display

        from mxnb.views.widget import TraceWidget

        display(TraceWidget(self.trace))

    def last(self, cluster: Any) -> Trace:
        """The trace of the last ``%%mxdist`` cell (fetched from the ranks if needed)."""
        current = cluster is not None and cluster.running and self.cluster is cluster
        if not current or not self.targets:
            raise MxnbError("no traced cell yet: run a %%mxdist cell first")
        if not self.recorded:
            raise MxnbError("the last %%mxdist cell ran with --no-trace: nothing was recorded")
        if self.trace is None:
            self.trace = fetch_trace(cluster.client[self.targets])
        return self.trace
