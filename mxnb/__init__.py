"""mxnb: run MLX distributed programs from a Jupyter notebook.

``%load_ext mxnb`` registers the ``%mxdist`` / ``%%mxdist`` magics.  Nothing
heavy is imported until the extension is loaded.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "last_trace",
    "load_ipython_extension",
    "pull",
    "show",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    from mxnb.background import prestart_size
    from mxnb.magic import MxdistMagics

    ipython.register_magics(MxdistMagics)
    try:
        n = prestart_size()
    except ValueError as e:
        print(f"mxdist: {e}")
        return
    if n is not None:
        _magics(ipython).prestart(n)


def unload_ipython_extension(ipython: Any) -> None:
    magics = _magics(ipython)
    if magics is not None:
        magics.stop()


def _magics(ipython: Any = None) -> Any:
    if ipython is None:
        from IPython import get_ipython

        ipython = get_ipython()
    if ipython is None:
        return None
    return ipython.magics_manager.registry.get("MxdistMagics")


def pull(name: str, targets: list[int] | None = None) -> list[Any]:
    """The value of ``name`` on each rank, in rank order (MLX arrays as NumPy).

    Evaluating a lazy array here runs only that rank's part of it: evaluate
    collective results inside the cell (``mx.eval``, ``print``) first.
    """
    from mxnb.engine.session import fetch

    magics = _magics()
    if magics is None or magics.cluster is None or not magics.cluster.running:
        from mxnb.errors import MxnbError

        raise MxnbError("no cluster running; run a %%mxdist cell first")
    cluster = magics.cluster
    view = cluster.view if targets is None else cluster.client[targets]
    return list(view.apply_sync(fetch, name))


def show(trace: Any = None) -> None:
    """Display the trace widget of the last ``%%mxdist`` cell (or of ``trace``).

    Shows, op by op, what every rank held before and after each
    ``mx.distributed`` call; see :mod:`mxnb.viz`.
    """
    from mxnb.viz import show as _show

    _show(trace)


def last_trace() -> Any:
    """The :class:`mxnb.trace.Trace` of the last ``%%mxdist`` cell, for use in code."""
    from mxnb.viz import last_trace as _last

    return _last(_magics())
