"""Where every value of a collective's result came from.

A reader should not have to choose inputs that differ to see who
contributed what.  For each op this works out, from the recorded types and
inputs, the part of the result each rank is responsible for:

* ``all_gather``: the block of the result's first axis that each rank sent;
* ``sum_scatter``: the slice of the input's first axis (and so of the sum)
  that each rank receives;
* ``all_max`` / ``all_min``: per element, the rank whose input won (the
  lowest rank on a tie, as the reader can check in the terms);
* ``all_sum``: nothing to compute, every rank's input at that element is a
  term, which the views read straight from the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mxnb.trace.expect import exact_inputs

if TYPE_CHECKING:
    from mxnb.trace.merge import Step

__all__ = ["Provenance", "provenance"]


@dataclass(frozen=True)
class Provenance:
    """Which rank each part of a result belongs to (world ranks)."""

    #: all_gather: (rank, first row, end row) of the result; sum_scatter: of the input
    blocks: list[tuple[int, int, int]]
    #: all_max / all_min: per element (row-major), the rank whose input won
    winners: list[int] | None = None


def _rows(shape: list[int] | None) -> int | None:
    if shape is None:
        return None
    return shape[0] if shape else 1  # a scalar is gathered as one row


def provenance(step: Step) -> Provenance | None:
    """The provenance of one step, or None where it cannot be known or is not needed."""
    members = list(step.members)
    types = [(step.ranks.get(r) or {}).get("in") for r in members]
    if step.op == "all_gather":
        rows = [_rows(t["shape"]) if t else None for t in types]
        if any(n is None for n in rows):
            return None
        ends = np.cumsum([0, *rows]).tolist()
        return Provenance([(r, ends[i], ends[i + 1]) for i, r in enumerate(members)])
    if step.op == "sum_scatter":
        shape = next((t["shape"] for t in types if t), None)
        if not shape or shape[0] % len(members):
            return None
        m = shape[0] // len(members)
        return Provenance([(r, i * m, (i + 1) * m) for i, r in enumerate(members)])
    if step.op in ("all_max", "all_min"):
        got = exact_inputs(step)
        if got is None:
            return None
        stacked = np.stack(got[0]).reshape(len(members), -1)
        pick = np.argmax if step.op == "all_max" else np.argmin
        with np.errstate(invalid="ignore"):
            won = pick(stacked, axis=0)
        return Provenance([], [members[int(i)] for i in won])
    return None
