"""The one kernel module that runs functions on the ranks.

Every call the kernel makes into a rank goes through here, to the functions
of :mod:`mxnb.rank.calls`; nothing else on the kernel side imports the rank
side.  Each function takes an ipyparallel view (the ranks to ask).
"""

from __future__ import annotations

from typing import Any

from mxnb.errors import MxnbError
from mxnb.kernel.relay import RelayLost
from mxnb.protocol.messages import RankInfo, TraceReport
from mxnb.rank import calls

__all__ = [
    "collect_traces",
    "prepare",
    "pull",
    "reset_checks",
    "set_bare",
    "set_checked",
    "set_recording",
]


def _apply(view: Any, fn: Any, *args: Any, timeout: float | None = None) -> list[Any]:
    if timeout is None:
        return list(view.apply_sync(fn, *args))
    ar = view.apply_async(fn, *args)
    try:
        return list(ar.get(timeout=timeout))
    except TimeoutError:
        raise MxnbError(
            f"the ranks did not answer within {timeout:g} s (still busy with an earlier cell?)"
        ) from None


def prepare(view: Any, timeout: float) -> tuple[list[RankInfo], Any]:
    """Give each rank its cell namespace; returns what each rank says about itself,
    and the request, whose output start-up waits for too (:mod:`mxnb.kernel.relay`)."""
    ar = view.apply_async(calls.prepare)
    try:
        return list(ar.get(timeout=timeout)), ar
    except TimeoutError:
        raise RelayLost(
            f"the ranks registered, but did not answer mxnb's first request within "
            f"{timeout:g} s: ipyparallel's controller did not pass it on, or their reply back."
        ) from None


def pull(view: Any, name: str) -> list[Any]:
    """``name`` from every rank of ``view``, in rank order (MLX arrays as NumPy)."""
    return _apply(view, calls.value_of, name)


def collect_traces(view: Any, timeout: float) -> list[TraceReport]:
    return _apply(view, calls.collect_trace, timeout=timeout)


def set_recording(view: Any, on: bool, keep: bool = False, timeout: float = 10.0) -> None:
    _apply(view, calls.set_recording, on, keep, timeout=timeout)


def set_checked(view: Any, on: bool) -> None:
    _apply(view, calls.set_checked, on)


def set_bare(view: Any, on: bool) -> None:
    _apply(view, calls.set_bare, on)


def reset_checks(view: Any) -> dict[int, list[tuple[int, int]]]:
    """Reset every rank's checks; rank -> orphaned messages it discarded."""
    return dict(zip(view.targets, _apply(view, calls.reset_checks), strict=True))
