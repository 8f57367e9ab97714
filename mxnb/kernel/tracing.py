"""Tracing seen from the kernel: recording on or off per cell, fetching, showing.

The session calls :meth:`Tracing.before_cell` and :meth:`Tracing.after_cell`
around each ``%%mxdist`` cell.  Recording is on by default and costs only
metadata and array handles while the cell runs; values are read and encoded
on the ranks only when a trace is fetched (``--viz`` or :func:`mxnb.show`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mxnb.errors import MxnbError, RunOrderError
from mxnb.kernel import remote

if TYPE_CHECKING:  # the trace model (and NumPy) are imported once a trace is read
    from mxnb.trace import Trace

__all__ = ["FETCH_TIMEOUT", "Tracing", "fetch_trace"]

#: Seconds to wait for the ranks to hand over a trace.
FETCH_TIMEOUT = 60.0


def fetch_trace(view: Any, timeout: float = FETCH_TIMEOUT) -> Trace:
    """The last cell's trace from every rank of ``view``."""
    from mxnb.trace import Trace

    return Trace(remote.collect_traces(view, timeout))


class Tracing:
    """What the session knows about recording on its cluster's ranks."""

    def __init__(self) -> None:
        self.cluster: Any = None
        #: rank -> (recording, keeping values) there (unknown ranks: the rank default)
        self.recording: dict[int, tuple[bool, bool]] = {}
        self.targets: list[int] = []
        self.recorded = False
        self.trace: Trace | None = None

    def before_cell(self, cluster: Any, view: Any, record: bool, keep: bool = False) -> None:
        """Switch recording on the cell's ranks, only where it must change.

        ``keep`` (``--viz``) holds every op's input and output until the trace
        is read, so MLX cannot reuse those buffers; by default the trace holds
        only what the cell itself still holds when it ends.
        """
        if self.cluster is not cluster:
            self.cluster, self.recording, self.trace = cluster, {}, None
        want = (record, keep and record)
        change = [r for r in view.targets if self.recording.get(r, (True, False)) != want]
        if change:
            remote.set_recording(cluster.client[change], *want)
            self.recording.update(dict.fromkeys(change, want))
        self.targets, self.recorded, self.trace = list(view.targets), record, None

    def after_cell(self, view: Any, result: Any, show: bool) -> str:
        """With ``--viz``: fetch the trace and display it, also when the cell failed.

        Returns what the cell's error, if any, should say about the trace.
        """
        if not show:
            return ""
        if result.unfinished:
            print("mxdist: no trace shown: some ranks have not finished the cell")
            return "No trace is shown: some ranks had not finished the cell."
        self.trace = fetch_trace(view)
        from IPython.display import display

        from mxnb.views.widget import TraceWidget

        display(TraceWidget(self.trace))
        return "The trace of what ran is shown above; mxnb.last_trace() returns it."

    def check_order(self, view: Any, result: Any, shown: bool) -> None:
        """Raise :class:`RunOrderError` if the ranks ran a group's collectives in
        different orders; ``shown``: the cell's trace is displayed above.

        Only when a rank said it ran some out of call order (its reply's
        payload), and not every rank ran them in that same order, is the trace
        fetched and compared: otherwise no two ranks can differ, and a cell
        costs nothing more.
        """
        if not _orders_differ(result.outcomes):
            return
        if self.trace is None:
            self.trace = fetch_trace(view)
        swaps = self.trace.swaps
        if not swaps:
            return
        said = [f"On {s.first.group_text()}: {s.note(sites=True)}" for s in swaps]
        where = "above" if shown else "of the cell (mxnb.show())"
        said.append(f"The trace {where} marks the results that are wrong.")
        raise RunOrderError(" ".join(said))

    def show_probed(self, states: dict[int, Any], size: int) -> str:
        """After the ranks had to be stopped: the trace their last probe answers hold."""
        from IPython.display import display

        from mxnb.trace import Trace
        from mxnb.trace.probed import reports_from_probes
        from mxnb.views.widget import TraceWidget

        reports = reports_from_probes(states, size)
        if not any(r["ops"] for r in reports):
            return " No trace is shown: the ranks were stopped before they called an op."
        self.trace = Trace(reports)
        display(TraceWidget(self.trace))
        return (
            " The trace shown above lists the ops the ranks had called, from their last "
            "probe answers; their values were lost with the stopped ranks."
        )

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


def _orders_differ(outcomes: list[Any]) -> bool:
    """Whether the ranks may have run some group's collectives in different orders.

    Each rank that ran a group out of call order said in which order; ranks in
    call order said nothing.  Only when every rank said the same for a group
    can nothing differ (a group not every rank is in is compared in the trace).
    """
    said = {label for o in outcomes for label in o.late}
    return any(len({o.late.get(label) for o in outcomes}) > 1 for label in said)
