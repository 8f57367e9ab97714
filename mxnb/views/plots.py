"""Values drawn for the static picture: bars for 1-D, cells for 2-D, numbers where they fit,
and each rank's part of a value (provenance) as a bar in its colour."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from PIL import Image

from mxnb.views.palette import NAN, Color, rank_color
from mxnb.views.pen import (
    BAR_H,
    CELL_H,
    CELL_MAX,
    INK,
    LINE,
    MAP_H,
    PANEL_W,
    RED,
    SLOT_MAX,
    SMALL,
    WHITE,
    Pen,
    dark,
    font,
    line_h,
)  # fmt: skip
from mxnb.views.scale import Scale, short_num

#: Numbers are written for up to NUM values (2-D: at most NUM_COLS columns).
NUM, NUM_COLS = 16, 8


def labels_fitting(nums: np.ndarray, dtype: str, width: int) -> list[str] | None:
    """Labels that all fit ``width`` px, with as many digits as allow it (None: none do)."""
    for sig in (4, 3, 2):
        labels = [short_num(float(v), sig, dtype) for v in nums.ravel()]
        if max(font(SMALL).getlength(s) for s in labels) <= width - 6:
            return labels
    return None


def numbered(shape: tuple[int, ...] | list[int]) -> bool:
    """Whether an array is small enough to be drawn with its numbers written."""
    if len(shape) == 1:
        return shape[0] <= NUM
    return (
        len(shape) == 2 and shape[1] <= NUM_COLS and shape[0] <= NUM and shape[0] * shape[1] <= 64
    )


Band = tuple[int, int, int, str]  # (rank, first, end, label): elements (1-D) or rows (2-D)


def draw_bands(pen: Pen, bands: list[Band], at: Callable[[int], tuple[float, float]], y: float,
           across: bool) -> None:  # fmt: skip
    """Provenance: each rank's part of a value, as a bar in its colour with its label.

    ``at(i)`` is where element (or row) ``i`` was drawn; ``across``: a bar under
    the elements, else a bar beside the rows with the label to its right.
    """
    for rank, first, end, label in bands:
        a, b = at(first)[0], at(end - 1)[1]
        c = rank_color(rank)
        if across:
            pen.draw.rectangle((a + 1, y, b - 1, y + 4), fill=c)
            if label and font(SMALL).getlength(label) < b - a:
                pen.text((a + b) / 2, y + 6, label, SMALL, c if not _light(c) else INK, anchor="ma")
        else:
            pen.draw.rectangle((y, a + 1, y + 4, b - 1), fill=c)
            if label and b - a >= SMALL:  # room for its words beside its rows
                pen.text(y + 8, a + 1, label, SMALL, c if not _light(c) else INK)


def _light(c: Color) -> bool:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 190


def bars(pen: Pen, x: int, y: int, v: np.ndarray, scale: Scale, dtype: str,
          bands: list[Band]) -> tuple[int, bool]:  # fmt: skip
    """Bars from zero (numbers under them when few); returns (bottom, all values written)."""
    n = v.size
    if n > PANEL_W:  # one bar per pixel column: the mean of its values
        edges = np.linspace(0, n, PANEL_W + 1).astype(int)
        v = np.array([np.nanmean(v[a:b]) for a, b in itertools.pairwise(edges)])
    slot = max(1.0, min(SLOT_MAX, PANEL_W / v.size))
    if n <= NUM:  # wide enough for the op's widest number, if there is room
        slot = min(PANEL_W / n, max(slot, scale.label_w + 8))
    labels = labels_fitting(v, dtype, int(slot)) if n <= NUM else None
    lo, hi = min(scale.lo, 0.0), max(scale.hi, 0.0)
    hi = hi if hi > lo else lo + 1.0
    # room beyond a clipped scale, so that saturated bars stick out of it
    lo, hi = lo - 0.25 * (hi - lo) * scale.under, hi + 0.25 * (hi - lo) * scale.over

    def py(val: float) -> float:
        return y + (hi - min(max(val, lo), hi)) / (hi - lo) * (BAR_H - 1)

    pen.draw.line((x, py(0.0), x + slot * v.size, py(0.0)), fill=LINE)
    gap = 1 if slot >= 4 else 0
    for k, b in enumerate(v):
        x0, x1 = x + k * slot + gap, max(x + k * slot + gap, x + (k + 1) * slot - gap - 1)
        if not np.isfinite(b):
            pen.draw.line((x0, y + BAR_H - 1, x1, y + BAR_H - 1), fill=NAN, width=3)
            continue
        c = scale.color(b)
        top, bot = py(max(b, 0.0)), py(min(b, 0.0))
        edge = (int(c[0] * 0.7), int(c[1] * 0.7), int(c[2] * 0.7)) if gap else None
        pen.draw.rectangle((x0, top, x1, max(top + 1, bot)), fill=c, outline=edge)
        if b > hi or b < lo:  # saturated: a red notch at the end it was cut at
            end, tip = (y, 4) if b > hi else (y + BAR_H - 1, -4)
            mid = (x0 + x1) / 2
            pen.draw.polygon([(mid - 4, end + tip), (mid + 4, end + tip), (mid, end)], fill=RED)
    for k, s in enumerate(labels or []):
        pen.text(x + (k + 0.5) * slot, y + BAR_H + 2, s, SMALL, anchor="ma")
    bottom = y + BAR_H + (line_h(SMALL) + 2 if labels else 0)
    if bands and n <= PANEL_W:
        draw_bands(pen, bands, lambda i: (x + i * slot, x + (i + 1) * slot), bottom + 1, True)
        bottom += 6 + (line_h(SMALL) if any(b[3] for b in bands) else 0)
    return bottom, labels is not None


def heatmap(
    pen: Pen, x: int, y: int, v: np.ndarray, scale: Scale, dtype: str, bands: list[Band]
) -> tuple[int, bool]:
    """Cells on the op's scale, with their numbers when the grid is small."""
    h, w = v.shape
    rgb = scale.colors(v)
    cw = min(CELL_MAX, PANEL_W // w)
    labels = labels_fitting(v, dtype, cw) if numbered(v.shape) else None
    if labels is not None:
        for i, j in itertools.product(range(h), range(w)):
            c = scale.color(v[i, j])
            box = (x + j * cw, y + i * CELL_H, x + (j + 1) * cw - 1, y + (i + 1) * CELL_H - 1)
            pen.draw.rectangle(box, fill=c, outline=WHITE)
            ink = WHITE if dark(c) else INK
            pen.text(
                box[0] + cw / 2, box[1] + CELL_H / 2, labels[i * w + j], SMALL, ink, anchor="mm"
            )
        if bands:
            rows = lambda i: (y + i * CELL_H, y + (i + 1) * CELL_H)  # noqa: E731
            draw_bands(pen, bands, rows, x + w * cw + 4, False)
        return y + h * CELL_H, True
    cell = min(PANEL_W / w, MAP_H / h, CELL_MAX)
    pw, ph = max(12, round(w * cell)), max(12, round(h * cell))
    up = pw >= w and ph >= h  # blocks when enlarging, averages when shrinking
    how = Image.Resampling.NEAREST if up else Image.Resampling.BOX
    pen.img.paste(Image.fromarray(rgb).resize((pw, ph), how), (x, y))
    pen.draw.rectangle((x - 1, y - 1, x + pw, y + ph), outline=LINE)
    if bands:  # whose rows are whose, beside the map
        rows = lambda i: (y + i * ph / h, y + (i + 1) * ph / h)  # noqa: E731
        draw_bands(pen, bands, rows, x + pw + 4, False)
    return y + ph, False
