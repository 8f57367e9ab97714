"""mxnb: run MLX distributed programs from a Jupyter notebook.

``%load_ext mxnb`` registers the ``%mxdist`` / ``%%mxdist`` magics.  Nothing
heavy is imported until the extension is loaded.

The package is laid out by where code runs: :mod:`mxnb.kernel` in the
notebook's kernel, :mod:`mxnb.rank` inside each MPI rank, :mod:`mxnb.controller`
in the ipyparallel controller between them, :mod:`mxnb.protocol` what they
share, :mod:`mxnb.trace` the merged trace of a cell, and :mod:`mxnb.views`
what a user sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mxnb.errors import CommMismatch, MxnbError, RankError, RunOrderError

if TYPE_CHECKING:
    from mxnb.kernel.session import MxdistSession
    from mxnb.trace import Trace
    from mxnb.views.ringpic import RingSteps

__version__ = "0.1.0"
__all__ = [
    "CommMismatch",
    "MxnbError",
    "RankError",
    "RunOrderError",
    "Trace",
    "__version__",
    "last_trace",
    "load_ipython_extension",
    "pull",
    "ring_steps",
    "show",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    if name == "Trace":  # imported on first use: it pulls in NumPy
        from mxnb.trace import Trace

        return Trace
    raise AttributeError(f"module 'mxnb' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    from mxnb.kernel.background import prestart_size
    from mxnb.kernel.magics import MxdistMagics

    ipython.register_magics(MxdistMagics)
    try:
        n = prestart_size()
    except ValueError as e:
        print(f"mxdist: {e}")
        return
    session = _session(ipython)
    if n is not None and session is not None:
        session.prestart(n)


def unload_ipython_extension(ipython: Any) -> None:
    session = _session(ipython)
    if session is not None:
        session.stop()


def _session(ipython: Any = None) -> MxdistSession | None:
    """The shell's mxnb session, if the extension is loaded."""
    if ipython is None:
        from IPython import get_ipython

        ipython = get_ipython()
    if ipython is None:
        return None
    magics = ipython.magics_manager.registry.get("MxdistMagics")
    return None if magics is None else magics.session


def pull(name: str, targets: list[int] | None = None) -> list[Any]:
    """The value of ``name`` on each rank, in rank order (MLX arrays as NumPy).

    Evaluating a lazy array here runs only that rank's part of it: evaluate
    collective results inside the cell (``mx.eval``, ``print``) first.
    """
    session = _session()
    if session is None:
        raise MxnbError("no cluster running; run a %%mxdist cell first")
    return session.pull(name, targets)


def show(trace: Trace | None = None) -> None:
    """Display the trace widget of the last ``%%mxdist`` cell (or of ``trace``).

    Shows, op by op, what every rank held before and after each
    ``mx.distributed`` call.
    """
    from IPython.display import display

    from mxnb.views.widget import TraceWidget

    display(TraceWidget(trace if trace is not None else last_trace()))


def ring_steps(op: int | None = None, trace: Trace | None = None) -> RingSteps:
    """The textbook ring algorithm, round by round, on op number ``op`` of a trace.

    ``op`` counts as the views do (``#1`` is the cell's first op); by default
    the first ``all_sum`` or ``all_gather``.  Its inputs must have been kept
    exactly (``--viz``, at most 4096 elements per rank; a picture is readable
    up to a few dozen).  Shown as a picture in a
    notebook, as text elsewhere; the widget steps through the same rounds.
    """
    from mxnb.views.ringpic import RingSteps

    t = trace if trace is not None else last_trace()
    if op is None:
        op = next((s.index for s in t.steps if s.op in ("all_sum", "all_gather")), None)
        if op is None:
            raise MxnbError("no all_sum or all_gather in this trace: name one with op=")
    replay = t.ring(op)
    return RingSteps(op, replay, {r: t.value(op, r, "after") for r in replay.ranks})


def last_trace() -> Trace:
    """The :class:`mxnb.trace.Trace` of the last ``%%mxdist`` cell, for use in code."""
    session = _session()
    if session is None:
        raise MxnbError("no traced cell yet: run a %%mxdist cell first")
    return session.tracing.last(session.cluster)
