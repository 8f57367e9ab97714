"""One op's colour scale: the same colours for every rank, robust to garbage values.

Kept apart from the drawing (:mod:`mxnb.widgets.picture`) as it needs only
NumPy: which range the colours span, and when a few wild values (a buffer
read with the wrong dtype) are left out of it, is a question about numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from mxnb.protocol.snapshot import decode
from mxnb.trace.text import count
from mxnb.trace.view import StepView
from mxnb.views.palette import COLORMAP, NAN, Color

__all__ = ["COLORMAP", "Scale", "drawn_values", "op_scale", "robust_range", "short_num"]

#: Values further than FENCE x MAD from the median are outliers; the scale is
#: clipped to the rest only if they would squash it SQUASH-fold.
FENCE, SQUASH = 10.0, 10.0


def short_num(v: float, sig: int, dtype: str = "") -> str:
    """A value short enough for a cell or a bar: fewer digits when ``sig`` is lower."""
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    if dtype == "bool":
        return ("True" if v else "False") if sig > 2 else ("T" if v else "F")
    if float(v).is_integer() and abs(v) < 10 ** (sig + 2):
        return str(int(v))
    return f"{v:.{sig}g}"


def drawn_values(snap: dict[str, Any]) -> np.ndarray:
    """What is drawn for a snapshot: exact values or block means, as float (|z| if complex)."""
    v = decode(snap)
    return np.abs(v) if np.iscomplexobj(v) else np.asarray(v, np.float64)


@dataclass
class Scale:
    """One op's value-to-colour map, shared by all its panels so that ranks compare."""

    lo: float = 0.0
    hi: float = 1.0
    note: str = ""
    under: bool = False  # clipped: some values lie below lo
    over: bool = False  # ... or above hi
    #: the op's widest number under bars (set by the picture): one slot width for all
    #: its panels, so that they line up
    label_w: float = 0.0

    def colors(self, v: np.ndarray) -> np.ndarray:
        """RGB (uint8) of values; out-of-range values saturate, NaN/inf are grey."""
        anchors = np.array(COLORMAP, np.float64)
        v = np.asarray(v, np.float64)
        # all values equal: the middle colour, neither "low" nor "high"
        t = np.full(v.shape, 0.5) if self.hi <= self.lo else (v - self.lo) / (self.hi - self.lo)
        finite = np.isfinite(t)
        t = np.clip(np.where(finite, t, 0.0), 0.0, 1.0) * (len(anchors) - 1)
        i = np.minimum(t.astype(int), len(anchors) - 2)
        f = (t - i)[..., None]
        rgb = anchors[i] * (1 - f) + anchors[i + 1] * f
        rgb[~finite] = NAN
        return np.rint(rgb).astype(np.uint8)

    def color(self, v: float) -> Color:
        r, g, b = (int(c) for c in self.colors(np.array(v)))
        return r, g, b


def robust_range(v: np.ndarray) -> tuple[float, float] | None:
    """The range of ``v`` without its outliers, or None if they do not matter.

    Outliers are values further than FENCE median absolute deviations from the
    median (the mean deviation when over half the values are equal); they
    matter when they would stretch the scale SQUASH-fold, leaving all other
    values one colour (an int32 read as float32 gives -2139095036 among 0..10).
    """
    med = float(np.median(v))
    dev = np.abs(v - med)
    inside = v[dev <= FENCE * (float(np.median(dev)) or float(dev.mean()))]
    if not inside.size or not inside.max() > inside.min():
        return None
    lo, hi = float(inside.min()), float(inside.max())
    return (lo, hi) if float(v.max() - v.min()) > SQUASH * (hi - lo) else None


def op_scale(step: StepView) -> Scale:
    """Min to max over every panel of the op, clipped (and saying so) if garbage would
    otherwise blank the picture."""
    parts: dict[tuple[int, str], np.ndarray] = {}
    for r, side in itertools.product(sorted(step.panels), ("before", "after")):
        snap, state = step.snap(r, side)
        if state == "ok" and snap is not None:
            v = drawn_values(snap).ravel()
            parts[(r, side)] = v[np.isfinite(v)]
    allv = np.concatenate([np.zeros(0), *parts.values()])
    if not allv.size:
        return Scale()
    clip = robust_range(allv)
    if clip is None:
        return Scale(float(allv.min()), float(allv.max()))
    lo, hi = clip
    out = allv[(allv < lo) | (allv > hi)]
    odd = [f"rank {r} {s}" for (r, s), v in parts.items() if ((v < lo) | (v > hi)).any()]
    a, b = short_num(out.min(), 4), short_num(out.max(), 4)
    note = (
        f"colour scale clipped to [{short_num(lo, 4)}, {short_num(hi, 4)}]; outliers: "
        f"{count(out.size, 'value')} {f'of {a}' if a == b else f'from {a} to {b}'}"
        f" in {', '.join(odd)} (drawn saturated)"
    )
    return Scale(lo, hi, note, bool(out.min() < lo), bool(out.max() > hi))
