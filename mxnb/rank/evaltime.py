"""When an op's data really moved: timing the evaluation that ran it.

MLX is lazy: calling ``all_sum`` only builds a graph node, and the transfer
happens inside whichever evaluation (``mx.eval``, ``print``, ``.item()``, ...)
first needs the result.  So the recorder's call time says nothing about the
transfer.  :class:`EvalTimer` listens to the rank's evaluation entry points
(:func:`mxnb.rank.entries.add_eval_listener`) and gives an op the wall time
of the first evaluation that was handed the op's *own* result.  Results are
matched by identity through a weak reference, so the ``id`` of a result that
died and was reused by another array is never mistaken for it.

The time is that of the whole evaluation: it includes whatever else the same
call computed, so each timed op also carries how many recorded ops and how
many arrays that evaluation was handed.  An op that is not timed says why
(``eval_note``):

* ``indirect``: its result was evaluated, but only as part of a larger
  expression (``mx.eval(all_sum(x) + 1)``), or outside the wrapped entry points;
* ``async``: ``mx.async_eval`` returns before the transfer ends;
* ``lazy``: never evaluated in the cell;
* ``unknown``: the result could no longer be looked at, or too many ops were
  waiting to be followed (:data:`MAX_FOLLOW`).

After each evaluation, untimed ops are checked for having been run by it
indirectly; otherwise a later, cheap ``print(y)`` of an already computed
result would be credited with the transfer.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mxnb.rank.pairing import unordered

__all__ = ["MAX_FOLLOW", "NOTES", "EvalTimer"]

#: Untimed ops an evaluation checks for having run them indirectly (the most
#: recent); older ones are given up as "unknown" rather than mistimed later.
MAX_FOLLOW = 32
#: What an untimed op's ``eval_note`` means.
NOTES = ("indirect", "async", "lazy", "unknown", "interrupted")


@dataclass(eq=False)
class _Untimed:
    meta: dict[str, Any]
    key: int  # id of the result when it was recorded
    ref: weakref.ref[Any]
    handle: Any  # the recorder's own handle on the result, or None (not kept)

    def output(self) -> Any:
        """The result if it can still be looked at: the user's object, else our handle."""
        out = self.ref()
        return self.handle if out is None else out


def untimed_fields() -> dict[str, Any]:
    """The timing fields of an op that no evaluation has run yet."""
    return {"eval_s": None, "eval_by": None, "eval_ops": 0, "eval_arrays": 0, "eval_note": None,
            "check_s": None}  # fmt: skip


class EvalTimer:
    """Attributes evaluation wall time to the ops whose results were evaluated."""

    def __init__(self, evaluated: Callable[[Any], bool]) -> None:
        #: tells, without evaluating, whether MLX has evaluated an array
        self.evaluated = evaluated
        self.pending: dict[int, _Untimed] = {}  # id(meta) -> op, oldest first
        self.by_result: dict[int, _Untimed] = {}  # id(result) -> op, while it lives

    def follow(self, meta: dict[str, Any], result: Any, handle: Any = None) -> None:
        """Start following an op's ``result``; fills ``meta``'s timing fields."""
        meta.update(untimed_fields())
        try:
            ref = weakref.ref(result)
        except TypeError:  # not an MLX array
            meta["eval_note"] = "unknown"
            return
        entry = _Untimed(meta, id(result), ref, handle)
        self.pending[id(meta)] = entry
        self.by_result[id(result)] = entry  # an older entry here had died: its id was reused

    def _settle(self, entry: _Untimed, note: str | None, **timing: Any) -> None:
        entry.meta.update(timing, eval_note=note)
        self._forget(entry)

    def _forget(self, entry: _Untimed) -> None:
        self.pending.pop(id(entry.meta), None)
        if self.by_result.get(entry.key) is entry:
            del self.by_result[entry.key]

    def on_eval(
        self,
        arrays: Sequence[Any],
        seconds: float | None,
        entry: str,
        check_s: float | None = None,
    ) -> None:
        """The listener: an evaluation of ``arrays`` took ``seconds`` (entry point
        ``entry``), after ``check_s`` of completing mxnb's checks; ``seconds`` None:
        interrupted during those checks, before MLX ran."""
        if not self.pending:
            return
        try:
            self._on_eval(arrays, seconds, entry, check_s)
        except Exception:  # timing must never break the user's evaluation
            pass

    def _on_eval(
        self, arrays: Sequence[Any], seconds: float | None, entry: str, check_s: float | None
    ) -> None:
        if len(arrays) > 1:  # each array once, as given
            arrays = list({id(a): a for a in arrays}.values())
        by_result = self.by_result
        hits = []
        for a in arrays:
            e = by_result.get(id(a))
            if e is not None and e.ref() is a:
                hits.append(e)
        by = _entry_names().get(entry, entry)
        if seconds is None:  # the evaluation never started: its check was interrupted
            for e in hits:
                self._settle(e, "interrupted", eval_by=by, check_s=check_s)
        elif entry == "mx.async_eval":
            for e in hits:
                self._settle(e, "async", eval_by=by)
        else:
            timing = {
                "eval_s": seconds, "eval_by": by, "eval_ops": len(hits),
                "eval_arrays": len(arrays), "check_s": check_s, "eval_note": None,
            }  # fmt: skip
            for e in hits:
                e.meta.update(timing)
                self._forget(e)
        if len(hits) > 1:
            _mark_unordered([e.meta for e in hits])
        if not self.pending:  # the common case: this evaluation ran every op there was
            return
        rest = list(self.pending.values())
        for e in rest[:-MAX_FOLLOW]:
            self._settle(e, "unknown")
        for e in rest[-MAX_FOLLOW:]:
            out = e.output()
            if out is None:
                self._settle(e, "unknown")
            elif self.evaluated(out):
                self._settle(e, "indirect")

    def end_cell(self) -> None:
        """Settle every op still untimed: evaluated some other way, or never."""
        for e in list(self.pending.values()):
            out = e.output()
            if out is None:
                self._settle(e, "unknown")
            else:
                self._settle(e, "indirect" if self.evaluated(out) else "lazy")
        self.pending.clear()
        self.by_result.clear()


def _entry_names() -> dict[str, str]:
    from mxnb.rank.entries import ENTRY_NAMES  # (entries imports this module)

    return ENTRY_NAMES


def _channel(m: dict[str, Any]) -> tuple[Any, ...]:
    return (m["group"], "send" if m["op"] == "send" else "recv", m["peer"], m.get("stream"))


def _mark_unordered(metas: list[dict[str, Any]]) -> None:
    """Sends to, or recvs from, one peer run by one evaluation: MLX picks their order."""
    p2p = [m for m in metas if m["op"] in ("send", "recv", "recv_like")]
    for same in unordered(p2p, _channel):
        for m in same:
            m["unordered"] = [o["seq"] for o in same if o is not m]
