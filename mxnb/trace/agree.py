"""Whether the ranks of one step agree: on what they called, and on what they hold.

Used by :class:`~mxnb.trace.merge.Trace` when it merges the ranks' records
into steps; the words are what every view shows under the step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mxnb.protocol.messages import in_call_order
from mxnb.protocol.ops import COLLECTIVES
from mxnb.protocol.snapshot import decode
from mxnb.protocol.wording import ranks_text, shape_text
from mxnb.trace.expect import RTOL

if TYPE_CHECKING:
    from mxnb.trace.merge import Step

__all__ = ["Swap", "disagreeing", "inputs_note", "run_order", "same_result"]


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


@dataclass(frozen=True)
class Swap:
    """Two collectives of one group that ranks ran in different orders: rank
    ``r`` ran ``first`` first, rank ``q`` ran ``second`` first."""

    first: Step
    second: Step
    r: int
    q: int

    def note(self, sites: bool = False) -> str:
        """The words every view shows; ``sites``: name each op's line too (an error
        says it away from the trace, where the steps' lines are not beside it)."""
        first, second = self.first.index, self.second.index
        said = {s.index: f"#{s.index}" + (f" ({s.site_text()})" if sites else "")
                for s in (self.first, self.second)}  # fmt: skip
        a, b = sorted(said)
        return (
            f"{ranks_text([self.r, self.q])} ran {said[a]} and {said[b]} in different "
            f"orders (rank {self.r} ran #{first} first, rank {self.q} #{second}): MPI "
            "pairs a group's collectives in the order each rank runs them, so it combined "
            "different collectives across the ranks. Evaluate them in the same order on "
            "every rank."
        )


def run_order(steps: list[Step]) -> list[Swap]:
    """Note, under both, two collectives of one group that ranks ran in different orders.

    MPI pairs a group's collectives in the order each rank runs them, which
    MLX's laziness makes the order of the evaluations, not of the calls: a
    rank that evaluates ``b`` before ``a`` while another evaluates ``a``
    first has each combined with the other's data, with no error.  Each op
    says which of its rank's evaluations ran it (``eval_no``); ops run by one
    evaluation, or whose evaluation is not known, are not compared.  Returns
    one swap per group that has one.
    """
    by_group: dict[str, list[Step]] = defaultdict(list)
    for step in steps:
        if step.op in COLLECTIVES:
            by_group[step.group].append(step)
    swaps = []
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
        at = {step.index: step for step in group}
        swap = Swap(at[first], at[second], r, q)
        swap.first.order_note = swap.second.order_note = swap.note()
        swaps.append(swap)
    return swaps


def _swapped(runs: dict[int, dict[int, int]]) -> tuple[int, int, int, int] | None:
    """(a, b, r, q): rank r ran step a in an earlier evaluation than step b, rank q
    in a later one; None if every rank ran them in one order.

    Only a rank that ran some collectives out of call order can be half of a
    swap, so each such rank is compared with every other one: no comparison
    at all in the common case, and O(n log n) for each pair compared.
    """
    ranks = sorted(runs)
    late = {q for q in ranks if not in_call_order(runs[q][i] for i in sorted(runs[q]))}
    for k, r in enumerate(ranks):
        for q in ranks[k + 1 :]:
            if r in late or q in late:
                found = _pair(runs[r], runs[q])
                if found is not None:
                    return (*found, r, q)
    return None


def _pair(mine: dict[int, int], theirs: dict[int, int]) -> tuple[int, int] | None:
    """(a, b): one rank ran step a in an earlier evaluation than step b, the other
    in a later one; None if the two ran their common steps in one order."""
    both = sorted((mine[i], theirs[i], i) for i in mine.keys() & theirs.keys())
    # (their eval_no, step): the step they ran last among those I ran in earlier evaluations
    best: tuple[int, int] | None = None
    current: tuple[int, int] | None = None  # the same over my evaluation at hand
    at = None
    for e_mine, e_theirs, i in both:
        if e_mine != at:  # my next evaluation: fold the last one in
            if current is not None and (best is None or current > best):
                best = current
            current, at = None, e_mine
        if best is not None and best[0] > e_theirs:
            return best[1], i
        if current is None or (e_theirs, i) > current:
            current = (e_theirs, i)
    return None
