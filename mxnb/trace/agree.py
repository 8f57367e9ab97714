"""Whether the ranks of one step agree: on what they called, and on what they hold.

Used by :class:`~mxnb.trace.merge.Trace` when it merges the ranks' records
into steps; the words are what every view shows under the step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from mxnb.protocol.ops import COLLECTIVES
from mxnb.protocol.snapshot import decode
from mxnb.protocol.wording import ranks_text, shape_text
from mxnb.trace.expect import RTOL

if TYPE_CHECKING:
    from mxnb.trace.merge import Step

__all__ = ["disagreeing", "inputs_note", "run_order", "same_result"]


def same_result(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two ranks hold the same result (bitwise, or within rounding)."""
    if a["shape"] != b["shape"] or a["dtype"] != b["dtype"]:
        return False
    if a.get("digest") and a["digest"] == b.get("digest"):
        return True
    rtol = RTOL.get(a["dtype"], 0.0)
    va, vb = decode(a), decode(b)
    if a["exact"] and b["exact"]:
        return bool(np.allclose(va, vb, rtol=rtol, atol=0.0, equal_nan=True))
    sa, sb = a["stats"], b["stats"]
    span = max(a.get("hi", 0) - a.get("lo", 0), b.get("hi", 0) - b.get("lo", 0), 1e-300)
    step = span / 65534 * 2
    for k in ("min", "max", "mean"):
        if (sa[k] is None) != (sb[k] is None):
            return False
        if sa[k] is not None and not np.isclose(sa[k], sb[k], rtol=max(rtol, 1e-12), atol=step):
            return False
    return va.shape == vb.shape and bool(np.allclose(va, vb, rtol=rtol, atol=step, equal_nan=True))


def inputs_note(step: Step) -> str:
    """Which ranks called which collective, or passed which dtype and shape, when
    they did not all do the same (the step is named after one of them)."""
    called: dict[str, list[int]] = defaultdict(list)
    for r in sorted(step.ranks):
        called[step.ranks[r]["op"]].append(r)
    if len(called) > 1:
        sides = (f"{ranks_text(rs)} called {op}" for op, rs in called.items())
        return "ops differ: " + "; ".join(sides)
    kinds: dict[str, list[int]] = defaultdict(list)
    for r in sorted(step.ranks):
        d = step.ranks[r].get("in")
        if d:
            kinds[f"{d['dtype']} {shape_text(d['shape'])}"].append(r)
    if len(kinds) < 2:
        return ""
    parts = sorted(kinds.items(), key=lambda kv: (len(kv[1]), kv[1]))
    return "inputs differ: " + "; ".join(f"{ranks_text(rs)} passed {k}" for k, rs in parts)


def disagreeing(step: Step) -> list[int]:
    """Every rank whose result was read, if they are not all the same.

    No majority is taken to be right: three ranks can agree on a wrong sum.
    """
    read = [r for r in step.members if step.snap(r, "after")[1] == "ok"]
    first = step.ranks[read[0]]["after"] if read else None
    if first is None or all(same_result(first, step.ranks[r]["after"]) for r in read[1:]):
        return []
    return read


def run_order(steps: list[Step]) -> None:
    """Note, under both, two collectives of one group that ranks ran in different orders.

    MPI pairs a group's collectives in the order each rank runs them, which
    MLX's laziness makes the order of the evaluations, not of the calls: a
    rank that evaluates ``b`` before ``a`` while another evaluates ``a``
    first has each combined with the other's data, with no error.  Each op
    says which of its rank's evaluations ran it (``eval_no``); ops run by one
    evaluation, or whose evaluation is not known, are not compared.
    """
    by_group: dict[str, list[Step]] = defaultdict(list)
    for step in steps:
        if step.op in COLLECTIVES:
            by_group[step.group].append(step)
    for group in by_group.values():
        runs: dict[int, dict[int, int]] = defaultdict(dict)  # rank -> step index -> eval_no
        for step in group:
            for rank, m in step.ranks.items():
                if m.get("eval_no") is not None:
                    runs[rank][step.index] = m["eval_no"]
        found = _swapped(runs)
        if found is None:
            continue
        first, second, r, q = found
        a, b = sorted((first, second))
        note = (
            f"{ranks_text([r, q])} ran #{a} and #{b} in different orders (rank {r} ran "
            f"#{first} first, rank {q} #{second}): MPI pairs a group's collectives in the "
            "order each rank runs them, so it combined different collectives across the "
            "ranks. Evaluate them in the same order on every rank."
        )
        for step in group:
            if step.index in (first, second):
                step.order_note = note


def _swapped(runs: dict[int, dict[int, int]]) -> tuple[int, int, int, int] | None:
    """(a, b, r, q): rank r ran step a in an earlier evaluation than step b, rank q
    in a later one; None if every rank ran them in one order.  O(n log n) a rank."""
    ranks = sorted(runs)
    if len(ranks) < 2:
        return None
    r = ranks[0]
    mine = runs[r]
    for q in ranks[1:]:
        theirs = runs[q]
        both = sorted((mine[i], theirs[i], i) for i in mine.keys() & theirs.keys())
        # (q's eval_no, step): the step q ran last among those r ran in earlier evaluations
        best: tuple[int, int] | None = None
        current: tuple[int, int] | None = None  # the same over r's evaluation at hand
        at = None
        for e_mine, e_theirs, i in both:
            if e_mine != at:  # r's next evaluation: fold the last one in
                if current is not None and (best is None or current > best):
                    best = current
                current, at = None, e_mine
            if best is not None and best[0] > e_theirs:
                return best[1], i, r, q
            if current is None or (e_theirs, i) > current:
                current = (e_theirs, i)
    return None
