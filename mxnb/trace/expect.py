"""What each rank should hold after a collective, worked out from the recorded inputs.

Ranks that agree with each other are not evidence of a right result: with one
rank passing ``int32`` where the others pass ``float32``, three ranks may hold
the same wrong number.  So when every member's input was recorded exactly,
mxnb recomputes the collective with NumPy and judges each rank's result
against that, never against a majority.  Integer arithmetic is done in the
op's own dtype (MPI wraps around as NumPy does); floating point is compared
with a tolerance, since MPI may add in another order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mxnb.protocol.snapshot import decode, encode

if TYPE_CHECKING:
    from mxnb.trace.merge import Step

__all__ = ["RTOL", "Expected", "close", "exact_inputs", "expected"]

#: Relative tolerance by dtype when comparing results.
RTOL = {"float16": 1e-2, "bfloat16": 2e-2, "float32": 1e-5, "complex64": 1e-5, "float64": 1e-12}
#: How each op's expected result is described.
HOW = {
    "all_sum": "the sum of the ranks' inputs",
    "all_max": "the elementwise max of the ranks' inputs",
    "all_min": "the elementwise min of the ranks' inputs",
    "all_gather": "the ranks' inputs stacked in rank order",
    "sum_scatter": "its slice of the sum of the ranks' inputs",
}
#: Dtypes NumPy computes in exactly as MPI does (others: float64 and a tolerance).
_EXACT_DTYPES = (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float32", "float64",
)  # fmt: skip


@dataclass(frozen=True)
class Expected:
    """What each member should hold, and who does not."""

    values: dict[int, np.ndarray]  # world rank -> expected result
    how: str  # how it was worked out, for the reader
    wrong: list[int]  # ranks whose recorded result differs from it

    def snapshot(self, rank: int, dtype: str) -> dict[str, Any]:
        return encode(self.values[rank], dtype=dtype)


def close(got: dict[str, Any], want: np.ndarray, dtype: str, scale: float = 0.0) -> bool:
    """Whether a recorded result equals the expected one (within rounding).

    ``scale`` bounds the terms that were added: a sum that cancels to about
    zero may differ from zero by rounding of that size.
    """
    if list(got["shape"]) != list(want.shape):
        return False
    rtol = RTOL.get(dtype, 0.0)
    if got["exact"]:
        atol = rtol * scale
        return bool(np.allclose(decode(got), want, rtol=rtol, atol=atol, equal_nan=True))
    stats = got["stats"]  # a large result: its exact min, max and mean
    finite = want[np.isfinite(want)] if want.size else want
    if finite.size == 0:
        return stats["min"] is None
    return all(
        stats[k] is not None and np.isclose(stats[k], float(f(finite)), rtol=max(rtol, 1e-9))
        for k, f in (("min", np.min), ("max", np.max), ("mean", np.mean))
    )


def exact_inputs(step: Step) -> tuple[list[np.ndarray], str] | None:
    """Every member's exact input in group order, and the dtype to compute in."""
    values, dtypes = [], set()
    for r in step.members:
        snap, state = step.snap(r, "before")
        if state != "ok" or snap is None or not snap["exact"]:
            return None
        values.append(decode(snap))
        dtypes.add(snap["dtype"])
    if not values or len({v.shape for v in values}) != 1:
        return None  # inputs of different shapes have no defined result
    dtype = dtypes.pop() if len(dtypes) == 1 else "float64"  # mixed: as numbers
    if dtype in _EXACT_DTYPES:
        np_dtype = np.dtype(dtype)
    else:  # float16, bfloat16 (NumPy has none), complex64: wider, compared with a tolerance
        np_dtype = np.dtype("complex128" if dtype.startswith("complex") else "float64")
    return [v.astype(np_dtype) for v in values], dtype


def _compute(op: str, values: list[np.ndarray]) -> list[np.ndarray] | None:
    """Per group rank, what the op leaves there."""
    n = len(values)
    stacked = np.stack(values)
    with np.errstate(over="ignore", invalid="ignore"):
        if op == "all_sum":
            return [stacked.sum(axis=0, dtype=stacked.dtype)] * n
        if op == "all_max":
            return [stacked.max(axis=0)] * n
        if op == "all_min":
            return [stacked.min(axis=0)] * n
        if op == "all_gather":
            return [np.concatenate([np.atleast_1d(v) for v in values], axis=0)] * n
        if op == "sum_scatter":
            total = stacked.sum(axis=0, dtype=stacked.dtype)
            if total.ndim == 0 or total.shape[0] % n:
                return None
            return list(np.split(total, n, axis=0))
    return None


def expected(step: Step) -> Expected | None:
    """The expected results of a collective step, or None if they cannot be known."""
    if step.op not in HOW:
        return None
    got = exact_inputs(step)
    if got is None:
        return None
    values, dtype = got
    per_rank = _compute(step.op, values)
    if per_rank is None:
        return None
    want = dict(zip(step.members, per_rank, strict=True))
    mixed = len({step.ranks[r]["before"]["dtype"] for r in step.members}) > 1
    how = HOW[step.op] + (" as numbers (the ranks passed different dtypes)" if mixed else "")
    finite = [np.abs(v[np.isfinite(v)]) for v in values if v.size]
    scale = len(values) * max((float(f.max()) for f in finite if f.size), default=0.0)
    wrong = []
    for r in step.members:
        snap, state = step.snap(r, "after")
        if state == "ok" and snap is not None and not close(snap, want[r], dtype, scale):
            wrong.append(r)
    return Expected(want, how, wrong)
