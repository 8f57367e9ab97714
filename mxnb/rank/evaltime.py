"""When an op's data really moved: timing the evaluation that ran it.

MLX is lazy: calling ``all_sum`` only builds a graph node, and the transfer
happens inside whichever evaluation (``mx.eval``, ``print``, ``.item()``, ...)
first needs the result.  So the recorder's call time says nothing about the
transfer.  :class:`EvalTimer` listens to the rank's evaluation entry points
(through the op log, :mod:`mxnb.rank.entries`) and gives an op the wall time
of the first evaluation that was handed the op's *own* result.  Results are
matched by identity, as the op log matches them for its checks (the records
it hands over, :attr:`~mxnb.rank.oplog.OpLog.given`), so the ``id`` of a result
that died and was reused by another array is never mistaken for it.  The
timing is written on the op's own record: following an op costs one dict
entry and no object of its own (issue 18).

The time is that of the whole evaluation: it includes whatever else the same
call computed, so each timed op also carries how many recorded ops and how
many arrays that evaluation was handed.  An op that is not timed says why
(``eval_note``):

* ``indirect``: its result was evaluated, but only as part of a larger
  expression (``mx.eval(all_sum(x) + 1)``), or outside the wrapped entry points;
* ``async``: ``mx.async_eval`` returns before the transfer ends;
* ``lazy``: never evaluated in the cell;
* ``unknown``: the result could no longer be looked at, or too many ops were
  waiting to be followed (:data:`MAX_FOLLOW`);
* ``refused``: mxnb's check found that the ranks disagree on the op (a
  :class:`~mxnb.errors.CommMismatch`), so MLX never ran it;
* ``held_back``: its ranks agree, but the check refused another op while
  completing the checks of its evaluation (one handed to it, or an earlier
  op whose check had landed), so MLX never ran it either;
* ``interrupted``: the evaluation was stopped while mxnb's check waited.
* ``vmapped``: called inside ``mx.vmap``, whose result runs the batched op
  MLX makes of it (:mod:`mxnb.rank.vmapped`), an array Python never sees.

After each evaluation, untimed ops are checked for having been run by it
indirectly; otherwise a later, cheap ``print(y)`` of an already computed
result would be credited with the transfer.  An evaluation of one op's own
result whose graph holds no other of MLX's distributed primitives runs no
other op, and asks nothing (:meth:`EvalTimer.before`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mxnb.rank import graph
from mxnb.rank.entries import ENTRY_NAMES
from mxnb.rank.pairing import channel, unordered

if TYPE_CHECKING:
    from mxnb.rank.oprecord import OpRecord

__all__ = ["MAX_FOLLOW", "NOTES", "EvalTimer", "output"]

#: Untimed ops an evaluation checks for having run them indirectly (the most
#: recent); older ones are given up as "unknown" rather than mistimed later.
MAX_FOLLOW = 32
#: What an untimed op's ``eval_note`` means.
NOTES = ("indirect", "async", "lazy", "unknown", "interrupted", "refused", "held_back", "vmapped")


def output(rec: OpRecord) -> Any:
    """The op's result if it can still be looked at: the user's object, else our handle."""
    out = rec.ref() if rec.ref is not None else None
    if out is None and not isinstance(rec.after, (str, weakref.ref)):
        return rec.after
    return out


class EvalTimer:
    """Attributes evaluation wall time to the ops whose results were evaluated."""

    def __init__(self, evaluated: Callable[[Any], bool]) -> None:
        #: tells, without evaluating, whether MLX has evaluated an array
        self.evaluated = evaluated
        #: id(record) -> untimed op, oldest first (cleared, never replaced: the C path reads it)
        self.pending: dict[int, OpRecord] = {}
        #: the cell's evaluations that ran so far: each op notes which one ran it
        #: (``eval_no``), the order a view compares across ranks (MPI pairs in it)
        self.evals = 0
        #: the running evaluation runs no op but the one it was handed (before)
        self.alone = False

    def reset(self) -> None:
        """A new cell: nothing followed, no evaluation yet (the dict stays the same
        object, which the C path reads: mxnb.rank.fastpath)."""
        self.pending.clear()
        self.evals = 0
        self.alone = False

    def before(
        self, arrays: Sequence[Any], given: Sequence[OpRecord], reading: graph.Reading
    ) -> None:
        """Before MLX runs an evaluation: can it run an untimed op it was not handed?

        ``for y in ys: mx.eval(y)`` otherwise asks it of up to :data:`MAX_FOLLOW`
        untimed ops after every evaluation, one reading of MLX's graph each
        (about 240 us an evaluation), and gives up the older ones as "unknown",
        though each is then evaluated by itself.  One array that is an op's own
        result, whose graph holds no other distributed primitive (``send(x * 2,
        1)`` holds a multiply too), runs no other op: one reading, the
        evaluation's own (``reading``, shared with the op log).
        """
        self.alone = False
        pending = self.pending
        if len(given) != 1 or len(pending) <= (id(given[0]) in pending):  # none to ask of
            return
        if output(given[0]) is not arrays[0] or any(a is not arrays[0] for a in arrays):
            return
        try:  # timing must never break the user's evaluation
            self.alone = graph.runs_alone(reading)
        except Exception:
            pass

    def follow(self, rec: OpRecord) -> None:
        """Start following an op's result (``rec.ref``) until an evaluation runs it."""
        if rec.ref is None:  # not an MLX array
            rec.eval_note = "unknown"
            return
        if rec.batch:  # a placeholder inside mx.vmap: the batched op is MLX's
            rec.eval_note = "vmapped"
            return
        self.pending[id(rec)] = rec

    def _settle(self, rec: OpRecord, note: str, by: str | None = None,
                check_s: float | None = None) -> None:  # fmt: skip
        rec.eval_note = note
        if by is not None:
            rec.timing = (None, by, 0, 0, check_s)
        self.pending.pop(id(rec), None)

    def on_eval(
        self,
        given: Sequence[OpRecord],
        arrays: int,
        seconds: float | None,
        entry: str,
        check_s: float | None = None,
    ) -> None:
        """An evaluation of ``arrays`` distinct arrays (``given``: the records of
        those that are op results) took ``seconds`` (entry point ``entry``), after ``check_s`` of
        completing mxnb's checks; ``seconds`` None: interrupted during those
        checks, before MLX ran."""
        if seconds is not None:
            self.evals += 1
        alone, self.alone = self.alone, False  # said of this evaluation alone
        pending = self.pending
        if not pending:
            return
        try:
            hits = []
            for rec in given:
                if pending.pop(id(rec), None) is not None:
                    hits.append(rec)
            if seconds is None:  # the checks stopped it: also those of ops not handed here
                hits += [r for r in list(pending.values()) if r.check == "mismatch"]
                for rec in hits:
                    pending.pop(id(rec), None)
            if hits:
                self._time(hits, arrays, seconds, entry, check_s)
            if pending and not alone:
                self._follow_up()
        except Exception:  # timing must never break the user's evaluation
            pass

    def _time(
        self,
        hits: list[OpRecord],
        arrays: int,
        seconds: float | None,
        entry: str,
        check_s: float | None,
    ) -> None:
        by = ENTRY_NAMES.get(entry, entry)
        if seconds is None:  # the evaluation never started: a check refused or was interrupted
            refused = any(rec.check == "mismatch" for rec in hits)
            for rec in hits:
                if rec.check == "mismatch":
                    note = "refused"
                else:  # its ranks agree, but the evaluation it was in did not run
                    note = "held_back" if refused else "interrupted"
                self._settle(rec, note, by, check_s)
        elif entry == "mx.async_eval":
            for rec in hits:
                self._settle(rec, "async", by)
                rec.eval_no = self.evals  # MLX queues its run now
        else:
            timing, k = (seconds, by, len(hits), arrays, check_s), self.evals
            for rec in hits:
                rec.timing, rec.eval_no = timing, k
        if len(hits) > 1 and seconds is not None:  # nothing ran: no order to speak of
            _mark_unordered(hits)

    def _follow_up(self) -> None:
        """Untimed ops the evaluation was not handed: did it run them on the way?"""
        rest = list(self.pending.values())
        for rec in rest[:-MAX_FOLLOW]:
            self._settle(rec, "unknown")
        for rec in rest[-MAX_FOLLOW:]:
            out = output(rec)
            if out is None:
                self._settle(rec, "unknown")
            elif self.evaluated(out):
                self._settle(rec, "indirect")
                rec.eval_no = self.evals  # run by the evaluation that just ended

    def end_cell(self) -> None:
        """Settle every op still untimed: evaluated some other way, or never."""
        for rec in list(self.pending.values()):
            out = output(rec)
            if out is None:
                self._settle(rec, "unknown")
            else:
                self._settle(rec, "indirect" if self.evaluated(out) else "lazy")
        self.pending.clear()


def _mark_unordered(recs: list[OpRecord]) -> None:
    """Sends to, or recvs from, one peer run by one evaluation: MLX picks their order."""
    p2p = [rec for rec in recs if rec.peer is not None]
    for same in unordered(p2p, channel):
        for rec in same:
            rec.unordered = [o.seq for o in same if o is not rec]
