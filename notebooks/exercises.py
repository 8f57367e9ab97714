"""Checks for the tutorials' exercises: a check that fails says what is wrong, in words.

Used by the exercise cells at the end of each notebook (and by the teacher's
solutions in ``solutions/``).  A failed check raises :class:`NotYet`, an
``AssertionError`` whose message names the rank, what it holds, and, for the
usual wrong answers, what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import mxnb
from mxnb.protocol.wording import ranks_text

__all__ = ["NotYet", "expect_everywhere", "expect_same", "per_rank"]

#: A known wrong answer: its value (the same on every rank, or per rank) and what it means.
Wrong = Mapping[str, Any | Callable[[int], Any]]


class NotYet(AssertionError):
    """The exercise is not solved yet; the message says what to change."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the message is the whole story."""
        return [f"Not yet: {self}"]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"


def _fmt(v: np.ndarray) -> str:
    if np.asarray(v).dtype == bool:
        return str(np.asarray(v).tolist())
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        return _num(float(a))
    if a.size > 8:  # the first few numbers of a long array may all be zeros: say its range
        return f"{a.size} numbers from {_num(float(a.min()))} to {_num(float(a.max()))}"
    return "[" + ", ".join(_num(x) for x in a.ravel()) + "]"


def per_rank(name: str) -> list[np.ndarray]:
    """``name`` on every rank, or a :class:`NotYet` saying which ranks lack it."""
    try:
        values = mxnb.pull(name)
    except Exception as e:  # the name is not defined on the ranks, or no cluster runs
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        msg = f"`{name}` is not set on the ranks: run your exercise cell first ({first})"
        raise NotYet(msg) from None
    missing = [r for r, v in enumerate(values) if v is None]
    if missing:
        raise NotYet(f"{ranks_text(missing)} left `{name}` as None: every rank must set it")
    return [np.asarray(v) for v in values]


def _same(a: np.ndarray, b: Any) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))


def expect_everywhere(name: str, want: Any, wrong: Wrong | None = None) -> None:
    """Every rank holds ``want`` as ``name`` (within float32 rounding; ``want`` may be a
    function of the rank); the usual wrong answers in ``wrong`` are recognised and
    explained."""
    got = per_rank(name)
    for r, g in enumerate(got):
        mine = want(r) if callable(want) else want
        if _same(g, mine):
            continue
        for why, value in (wrong or {}).items():
            if _same(g, value(r) if callable(value) else value):
                raise NotYet(f"rank {r} holds {_fmt(g)} as `{name}`: {why}")
        whose = f"rank {r} should hold" if callable(want) else "every rank should hold"
        raise NotYet(f"rank {r} holds {_fmt(g)} as `{name}`; {whose} {_fmt(mine)}")
    print(f"`{name}` is right on all {len(got)} ranks")


def expect_same(name: str, why: str = "") -> None:
    """Every rank holds what rank 0 holds as ``name``: the replicas of data
    parallelism, whose right value nobody knows in advance but all must share."""
    got = per_rank(name)
    differ = [r for r, g in enumerate(got) if not _same(g, got[0])]
    if differ:
        gaps = [
            float(np.max(np.abs(got[r].astype(np.float64) - got[0])))
            for r in differ
            if got[r].shape == got[0].shape
        ]
        by = f" (by up to {max(gaps):.3g})" if gaps else ""
        verb = "holds" if len(differ) == 1 else "hold"
        raise NotYet(
            f"{ranks_text(differ)} {verb} a different `{name}` from rank 0's{by}"
            + (f": {why}" if why else "")
        )
    print(f"`{name}` is the same on all {len(got)} ranks")
