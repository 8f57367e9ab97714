"""Every exception mxnb raises for a user to read.

All of them subclass ``RuntimeError``, as every error MLX raises does, so
code written to catch MLX's errors keeps working under mxnb.

Kernel-side errors (:class:`MxnbError` and its subclasses) show as a short
message without mxnb's stack: IPython calls ``_render_traceback_`` when it
exists.  A failing cell still fails (``Run All`` stops, nbclient reports it).
Rank-side errors (:class:`CommMismatch` and its kin) are raised inside the
user's code on a rank and travel back as that rank's error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mxnb.kernel.runner import CellResult

__all__ = [
    "BackendUnsupported",
    "ClusterError",
    "CommInterrupted",
    "CommMismatch",
    "MPIError",
    "MxnbError",
    "RankError",
    "RunOrderError",
    "UndefinedOrder",
    "UnknownGroup",
    "UnsupportedReduction",
]


class MxnbError(RuntimeError):
    """Base class of the kernel side's errors: the message is the whole story."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ClusterError(MxnbError):
    """The cluster could not be started or is not usable; says why."""


class MPIError(ClusterError):
    """No usable Open MPI: the message says what to install or set."""


class RankError(MxnbError):
    """Ranks raised, or the cell could not finish; names each rank.

    ``report`` (where each rank was, the likely cause) and ``note`` (what
    became of the cluster) follow the tracebacks.  Tracebacks of ranks that
    mxnb interrupted are left out: the report says where those ranks were.
    The wording lives in :mod:`mxnb.views.outcome`.
    """

    def __init__(
        self, result: CellResult, note: str = "", report: str = "", headline: str = ""
    ) -> None:
        from mxnb.views.outcome import error_summary, shown_failures

        self.result = result
        self.note = note
        self.report = report
        self.headline = headline
        self.shown = shown_failures(result, hide_interrupted=bool(report))
        message = error_summary(self.shown, headline)
        cause = next((ln for ln in report.splitlines() if ln.startswith("Likely cause: ")), "")
        # str(err) is what `except RuntimeError as e: print(e)` shows: give it the cause
        super().__init__(f"{message}. {cause}" if cause else message)

    @property
    def ranks(self) -> list[int]:
        return [o.rank for o in self.result.failed]

    def _render_traceback_(self) -> list[str]:
        from mxnb.views.outcome import error_lines

        return error_lines(self.shown, self.headline, self.report, self.note)


class RunOrderError(MxnbError):
    """Every rank finished the cell, but ranks ran a group's collectives in
    different orders, so MPI combined different collectives and their results
    are wrong; names the collectives, their lines and the ranks.

    Found after the fact, from each rank's record of which evaluation ran
    which op: the checks compare the calls, which agreed.
    """


class CommMismatch(RuntimeError):
    """Ranks disagree about an op; raised on every rank involved."""


class CommInterrupted(RuntimeError):
    """This rank stopped waiting for its peers (the user or mxnb interrupted it)."""


class BackendUnsupported(RuntimeError):
    """An op the running MLX backend cannot do, refused at the call before it can hang."""


class UnsupportedReduction(RuntimeError):
    """A reduction Open MPI cannot do (on ``bool``), refused before it aborts the job."""


class UndefinedOrder(RuntimeError):
    """Several sends to, or receives from, one peer run in one evaluation.

    MLX runs them in an order of its choosing and MPI pairs messages by
    arrival, so same-shaped arrays could come back swapped with no error.
    """


class UnknownGroup(RuntimeError):
    """An MLX group that mxnb cannot place: not made by ``world.split`` on this cluster."""
