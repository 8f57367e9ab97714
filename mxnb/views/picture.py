"""A static picture of a trace: the image fallback where no live widget runs.

nbconvert's HTML, GitHub and a notebook reopened without a kernel show only
this PNG, so it has to be readable on its own at 100% zoom: one block per op,
one row per rank with what it held before and after, the values as numbers
wherever they fit, and the problems (ranks that disagree, unmatched transfers,
garbage values) written out.  Drawn with Pillow, whose built-in FreeType font
(``ImageFont.load_default(size=...)``, Pillow >= 10.1) needs no font files.
That font covers ASCII and little more, so all text drawn here is ASCII.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mxnb.protocol.wording import shape_text
from mxnb.trace import Trace
from mxnb.trace.text import STATE_TEXT, count, describe_value
from mxnb.trace.view import StepView, TraceView, trace_view
from mxnb.views.palette import COLORMAP, NAN, RANK_COLORS, STATES, Color
from mxnb.views.scale import Scale, drawn_values, op_scale, short_num
from mxnb.views.strip import draw_strips, legend_items

__all__ = ["COLORMAP", "RANK_COLORS", "RED", "Layout", "render", "render_trace", "trace_png"]

Box = tuple[int, int, int, int]
RED: Color = (200, 30, 30)
INK, GREY_INK, CLIP_INK = (30, 30, 30), (95, 95, 95), (140, 85, 0)
WHITE, LINE, HATCH = (255, 255, 255), (205, 205, 205), (222, 222, 222)
HEAD, BODY, SMALL = 14, 13, 12  # font sizes (px)
MARGIN, LANE_W, PANEL_W, ARROW_W = 12, 78, 400, 40
WIDTH = 2 * MARGIN + LANE_W + 2 * PANEL_W + ARROW_W
BAR_H, MAP_H, CELL_MAX, CELL_H, SLOT_MAX = 56, 144, 48, 18, 44
#: Ops drawn; numbers are written for up to NUM values (2-D: at most NUM_COLS columns).
MAX_OPS, NUM, NUM_COLS = 6, 16, 8


def _numbered(shape: tuple[int, ...] | list[int]) -> bool:
    """Whether an array is small enough to be drawn with its numbers written."""
    if len(shape) == 1:
        return shape[0] <= NUM
    return (
        len(shape) == 2 and shape[1] <= NUM_COLS and shape[0] <= NUM and shape[0] * shape[1] <= 64
    )


@functools.cache
def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)


def _line_h(size: int) -> int:
    return size + 5


def _dark(c: Color) -> bool:
    """Whether white text reads better than black on ``c``."""
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 145


def _fit(text: str, size: int, width: float) -> str:
    """``text`` cut with an ellipsis so that it fits ``width`` pixels."""
    if _font(size).getlength(text) <= width:
        return text
    while text and _font(size).getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _wrap(text: str, size: int, width: float) -> list[str]:
    """Greedy word wrap: long notes go on several lines instead of off the edge."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _font(size).getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(_fit(word, size, width))
    return lines


def _labels(nums: np.ndarray, dtype: str, width: int) -> list[str] | None:
    """Labels that all fit ``width`` px, with as many digits as allow it (None: none do)."""
    for sig in (4, 3, 2):
        labels = [short_num(float(v), sig, dtype) for v in nums.ravel()]
        if max(_font(SMALL).getlength(s) for s in labels) <= width - 6:
            return labels
    return None


@dataclass
class Layout:
    """Where each op block and each panel was drawn (x0, y0, x1, y1): tests look there."""

    ops: dict[int, Box] = field(default_factory=dict)
    panels: dict[tuple[int, int, str], Box] = field(default_factory=dict)  # (op, rank, side)


class _Pen:
    """One block of the picture being drawn, full width, cropped when done."""

    def __init__(self, height: int) -> None:
        self.img = Image.new("RGB", (WIDTH, height), WHITE)
        self.draw = ImageDraw.Draw(self.img)

    def text(self, x: float, y: float, s: str, size: int = BODY, fill: Color = INK, **kw) -> float:
        """One line (cut to ``width`` px if given); returns its right edge."""
        s = _fit(s, size, kw.pop("width")) if "width" in kw else s
        self.draw.text((x, y), s, font=_font(size), fill=fill, **kw)
        return x + _font(size).getlength(s)

    def para(self, x: float, y: int, s: str, width: float, size: int = BODY, fill=INK) -> int:
        """Wrapped text; returns the y below it."""
        for line in _wrap(s, size, width):
            self.text(x, y, line, size, fill)
            y += _line_h(size)
        return y

    def hatch(self, box: Box) -> None:
        x0, y0, x1, y1 = box
        self.draw.rectangle(box, fill=WHITE, outline=LINE)
        for k in range(x0 - (y1 - y0), x1, 8):
            a, b = max(k, x0), min(k + (y1 - y0), x1)
            self.draw.line((a, y1 - (a - k), b, y1 - (b - k)), fill=HATCH)

    def gradient(self, x: int, y: int, w: int, h: int) -> None:
        ramp = Scale(0.0, 1.0).colors(np.linspace(0, 1, w))[None].repeat(h, axis=0)
        self.img.paste(Image.fromarray(ramp), (x, y))

    def arrow(self, x0: float, x1: float, y: float, fill: Color = GREY_INK) -> None:
        self.draw.line((x0, y, x1 - 6, y), fill=fill, width=2)
        self.draw.polygon([(x1 - 8, y - 5), (x1 - 8, y + 5), (x1, y)], fill=fill)


Band = tuple[int, int, int, str]  # (rank, first, end, label): elements (1-D) or rows (2-D)


def _bands(pen: _Pen, bands: list[Band], at: Callable[[int], tuple[float, float]], y: float,
           across: bool) -> None:  # fmt: skip
    """Provenance: each rank's part of a value, as a bar in its colour with its label.

    ``at(i)`` is where element (or row) ``i`` was drawn; ``across``: a bar under
    the elements, else a bar beside the rows with the label to its right.
    """
    for rank, first, end, label in bands:
        a, b = at(first)[0], at(end - 1)[1]
        c = RANK_COLORS[rank % len(RANK_COLORS)]
        if across:
            pen.draw.rectangle((a + 1, y, b - 1, y + 4), fill=c)
            if label and _font(SMALL).getlength(label) < b - a:
                pen.text((a + b) / 2, y + 6, label, SMALL, c if not _light(c) else INK, anchor="ma")
        else:
            pen.draw.rectangle((y, a + 1, y + 4, b - 1), fill=c)
            if label:
                pen.text(y + 8, a + 1, label, SMALL, c if not _light(c) else INK)


def _light(c: Color) -> bool:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 190


def _bars(pen: _Pen, x: int, y: int, v: np.ndarray, scale: Scale, dtype: str,
          bands: list[Band]) -> tuple[int, bool]:  # fmt: skip
    """Bars from zero (numbers under them when few); returns (bottom, all values written)."""
    n = v.size
    if n > PANEL_W:  # one bar per pixel column: the mean of its values
        edges = np.linspace(0, n, PANEL_W + 1).astype(int)
        v = np.array([np.nanmean(v[a:b]) for a, b in itertools.pairwise(edges)])
    slot = max(1.0, min(SLOT_MAX, PANEL_W / v.size))
    if n <= NUM:  # wide enough for the op's widest number, if there is room
        slot = min(PANEL_W / n, max(slot, scale.label_w + 8))
    labels = _labels(v, dtype, int(slot)) if n <= NUM else None
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
    bottom = y + BAR_H + (_line_h(SMALL) + 2 if labels else 0)
    if bands and n <= PANEL_W:
        _bands(pen, bands, lambda i: (x + i * slot, x + (i + 1) * slot), bottom + 1, True)
        bottom += 6 + (_line_h(SMALL) if any(b[3] for b in bands) else 0)
    return bottom, labels is not None


def _heatmap(
    pen: _Pen, x: int, y: int, v: np.ndarray, scale: Scale, dtype: str, bands: list[Band]
) -> tuple[int, bool]:
    """Cells on the op's scale, with their numbers when the grid is small."""
    h, w = v.shape
    rgb = scale.colors(v)
    cw = min(CELL_MAX, PANEL_W // w)
    labels = _labels(v, dtype, cw) if _numbered(v.shape) else None
    if labels is not None:
        for i, j in itertools.product(range(h), range(w)):
            c = scale.color(v[i, j])
            box = (x + j * cw, y + i * CELL_H, x + (j + 1) * cw - 1, y + (i + 1) * CELL_H - 1)
            pen.draw.rectangle(box, fill=c, outline=WHITE)
            ink = WHITE if _dark(c) else INK
            pen.text(
                box[0] + cw / 2, box[1] + CELL_H / 2, labels[i * w + j], SMALL, ink, anchor="mm"
            )
        if bands:
            rows = lambda i: (y + i * CELL_H, y + (i + 1) * CELL_H)  # noqa: E731
            _bands(pen, bands, rows, x + w * cw + 4, False)
        return y + h * CELL_H, True
    cell = min(PANEL_W / w, MAP_H / h, CELL_MAX)
    pw, ph = max(12, round(w * cell)), max(12, round(h * cell))
    up = pw >= w and ph >= h  # blocks when enlarging, averages when shrinking
    how = Image.Resampling.NEAREST if up else Image.Resampling.BOX
    pen.img.paste(Image.fromarray(rgb).resize((pw, ph), how), (x, y))
    pen.draw.rectangle((x - 1, y - 1, x + pw, y + ph), outline=LINE)
    return y + ph, False


def _provenance(step: StepView, rank: int, side: str) -> list[Band]:
    """Who each part of this value came from (gather), goes to (scatter), or won (max/min)."""
    prov = step.provenance
    if prov is None:
        return []
    if step.op == "all_gather" and side == "after":
        return [(r, a, b, f"from rank {r}") for r, a, b in prov.blocks]
    if step.op == "sum_scatter" and side == "before":
        return [(r, a, b, f"to rank {r}") for r, a, b in prov.blocks]
    if prov.winners and side == "after":
        return [(r, i, i + 1, "") for i, r in enumerate(prov.winners)]
    return []


def _panel(pen: _Pen, x: int, y: int, step: StepView, rank: int, side: str, scale: Scale) -> int:
    """One rank's value on one side: label, picture, and a summary when not all is shown."""
    snap, state = step.snap(rank, side)
    # dtype and shape, even without values
    meta = snap if state == "ok" and snap else step.panels[rank].types[side]
    label = f"{side}: " + (f"{meta['dtype']} {shape_text(meta['shape'])}" if meta else "nothing")
    top, y = y, y + _line_h(SMALL)
    if state != "ok" or snap is None:  # no value: the reason, in words, on a hatched box
        words = STATE_TEXT.get(state, f"({state})")
        words = "- (no array on this side)" if words == "-" else words
        pen.hatch((x, y, x + PANEL_W - 1, y + 30))
        pen.draw.rectangle((x + 6, y + 6, x + 14 + _font(BODY).getlength(words), y + 24), WHITE)
        pen.text(x + 10, y + 8, words, BODY, GREY_INK, width=PANEL_W - 20)
        bottom, shown = y + 31, True
    else:
        v, dtype = drawn_values(snap), snap["dtype"]
        if dtype.startswith("complex"):
            label += ", |z| shown"
        if v.size == 0:
            pen.text(x, y + 2, "empty", BODY, GREY_INK)
            bottom, shown = y + _line_h(BODY), True
        elif v.ndim == 0:
            pen.draw.rectangle((x, y + 2, x + 15, y + 17), fill=scale.color(float(v)), outline=INK)
            pen.text(x + 22, y + 1, short_num(float(v), 6, dtype), HEAD)
            bottom, shown = y + 21, True
        elif v.ndim == 1:
            bottom, shown = _bars(pen, x, y + 2, v, scale, dtype, _provenance(step, rank, side))
        else:
            if v.ndim > 2:
                label += f", slice [{'0, ' * (v.ndim - 2)}:, :] shown"
            bands = _provenance(step, rank, side) if v.ndim == 2 else []
            bottom, shown = _heatmap(pen, x, y + 2, v[(0,) * (v.ndim - 2)], scale, dtype, bands)
            shown = shown and v.ndim == 2
        if not (shown and snap["exact"]):
            # numbers too wide for their bars or cells are listed instead
            few = _numbered(snap["shape"]) and snap["exact"]
            text = describe_value(snap, state, limit=v.size if few else 8)
            bottom = pen.para(x, bottom + 3, text, PANEL_W, SMALL, GREY_INK)
    pen.text(x, top, label, SMALL, GREY_INK, width=PANEL_W)
    return bottom


def _chip(pen: _Pen, x: float, y: int, rank: int | None, width: float = 0) -> float:
    """The rank's identity colour as a filled label (some are too light for text on white)."""
    c = LINE if rank is None else RANK_COLORS[rank % len(RANK_COLORS)]
    label = f"rank {'?' if rank is None else rank}"
    width = width or _font(BODY).getlength(label) + 12
    pen.draw.rounded_rectangle((x, y, x + width, y + 19), radius=4, fill=c)
    pen.text(x + width / 2, y + 10, label, BODY, WHITE if _dark(c) else INK, anchor="mm")
    return x + width


def _label_w(step: StepView) -> float:
    """The widest number written under any bars of the op (0 if none)."""
    widths = [0.0]
    for r, side in itertools.product(step.panels, ("before", "after")):
        snap, state = step.snap(r, side)
        if state == "ok" and snap and len(snap["shape"]) == 1 and _numbered(snap["shape"]):
            nums = [short_num(x, 4, snap["dtype"]) for x in drawn_values(snap)]
            widths += [_font(SMALL).getlength(s) for s in nums]
    return max(widths)


def _op_block(step: StepView, ranks: list[int]) -> tuple[Image.Image, dict[Any, Box]]:
    """Header, a row per rank (before -> after), then transfers and what went wrong."""
    pen = _Pen(120 + len(ranks) * 300 + 40 * (len(step.transfers) + 6))
    scale, x, width = op_scale(step), MARGIN, WIDTH - 2 * MARGIN
    scale.label_w = _label_w(step)
    pen.draw.line((MARGIN, 0, WIDTH - MARGIN, 0), fill=LINE)
    head_w = width - 230  # room for the colour scale on the right
    right = pen.text(x, 8, f"#{step.index} {step.op} on {step.group_text}", HEAD, width=head_w)
    pen.draw.line((right + 5, 17, right + 15, 17), fill=INK)  # the font has no em dash
    pen.text(right + 20, 8, step.site_text, HEAD, width=head_w - (right + 20 - x))
    if any(step.snap(r, s)[1] == "ok" for r in step.panels for s in ("before", "after")):
        hi = short_num(scale.hi, 3)
        gx = WIDTH - MARGIN - 95 - int(_font(SMALL).getlength(hi))
        ink = CLIP_INK if scale.note else GREY_INK
        pen.text(gx - 5, 10, short_num(scale.lo, 3), SMALL, ink, anchor="ra")
        pen.gradient(gx, 12, 90, 10)
        pen.text(gx + 95, 10, hi, SMALL, ink)
    y, px = 8 + _line_h(HEAD) + 8, MARGIN + LANE_W
    boxes: dict[tuple[int, int, str], Box] = {}
    for r in ranks:
        _chip(pen, x + 8, y, r, LANE_W - 14)
        if r not in step.panels:
            pen.text(px, y + 3, "not in this op", BODY, GREY_INK)
            y += 28
            continue
        at = {"before": px, "after": px + PANEL_W + ARROW_W}
        bottom = max(_panel(pen, at[s], y + 3, step, r, s, scale) for s in at) + 3
        for side, left in at.items():  # one height for both frames of the row
            boxes[(step.index, r, side)] = box = (left - 4, y, left + PANEL_W + 3, bottom)
            bad = side == "after" and r in step.mismatch
            pen.draw.rectangle(box, outline=RED if bad else LINE, width=3 if bad else 1)
        pen.draw.rectangle((x, y, x + 3, bottom), fill=RANK_COLORS[r % len(RANK_COLORS)])
        pen.arrow(px + PANEL_W + 8, px + PANEL_W + ARROW_W - 14, (y + _line_h(SMALL) + bottom) // 2)
        y = bottom + 8
        want = step.panels[r].expected
        if want is not None:  # the right result, under the wrong one
            y = pen.para(at["after"], y - 4, f"expected {want.text}", PANEL_W, SMALL, RED) + 4
    for t in step.transfers:
        tx = pen.text(_chip(pen, x, y, t.src) + 4, y + 2, "->")
        tx = pen.text(_chip(pen, tx + 4, y, t.dst) + 3, y + 2, t.what + ("; " if t.note else ""))
        y = pen.para(tx, y + 2, t.note, x + width - tx, BODY, RED) if t.note else y + 24
    for note, ink in ((step.inputs_note, RED), (step.mismatch_text, RED), (scale.note, CLIP_INK)):
        y = pen.para(x, y, note, width, BODY, ink) if note else y
    return pen.img.crop((0, 0, WIDTH, y + 6)), boxes


def _legend(pen: _Pen, y: int) -> int:
    """What the marks mean, in one line under the ops."""
    pen.gradient(MARGIN, y + 3, 60, 10)
    x = pen.text(MARGIN + 66, y, "values: low to high (one colour scale per op)", SMALL, GREY_INK)
    pen.hatch((int(x) + 16, y + 1, int(x) + 40, y + 14))
    x = pen.text(x + 46, y, "no value", SMALL, GREY_INK)
    pen.draw.rectangle((x + 16, y + 1, x + 40, y + 14), outline=RED, width=3)
    x = pen.text(x + 46, y, "wrong result (expected value under it)", SMALL, GREY_INK)
    pen.draw.polygon([(x + 16, y + 12), (x + 24, y + 12), (x + 20, y + 4)], fill=RED)
    pen.text(x + 30, y, "value beyond a clipped scale", SMALL, GREY_INK)
    return y + _line_h(SMALL) + 6


def _chosen(view: TraceView) -> list[StepView]:
    """The ops drawn in full: those that went wrong first, then the first ones, in call order.

    A folded loop is drawn once; the timeline above shows every op.
    """
    tl = view.timeline
    cols = [c for c, f in tl.shown() if f is None or c < f.first + f.period]
    bad = [c for c in cols if tl.columns[c].state != "ok"][:MAX_OPS]
    rest = [c for c in cols if c not in bad][: MAX_OPS - len(bad)]
    return [view.steps[k] for c in sorted(bad + rest) for k in tl.columns[c].steps]


def _state_legend(pen: _Pen, y: int) -> int:
    x: float = MARGIN
    for st, words in legend_items():
        fill, ink, mark = STATES[st]
        if x + 20 + _font(SMALL).getlength(words) > WIDTH - MARGIN:
            x, y = MARGIN, y + _line_h(SMALL) + 4
        pen.draw.rounded_rectangle((x, y + 1, x + 16, y + 15), 3, fill=fill, outline=(150,) * 3)
        if mark:
            pen.text(x + 8, y + 8, mark, 10, ink, anchor="mm")
        x = pen.text(x + 20, y, words, SMALL, GREY_INK) + 14
    return y + _line_h(SMALL) + 8


def render(trace: Trace | TraceView) -> tuple[Image.Image, Layout]:
    """The picture, and where its ops and panels are."""
    view = trace if isinstance(trace, TraceView) else trace_view(trace)
    ranks = view.ranks
    top, lines = _Pen(80), view.text().splitlines()
    top.text(MARGIN, 10, lines[0], HEAD)
    y = 10 + _line_h(HEAD)
    if not view.steps and len(lines) > 1:
        y = top.para(MARGIN, y + 2, lines[1], WIDTH - 2 * MARGIN, BODY, GREY_INK)
    parts, layout = [top.img.crop((0, 0, WIDTH, y + 4))], Layout()
    if view.steps:
        strips, cut = draw_strips(view, WIDTH - 2 * MARGIN, _font)
        under = _Pen(60)
        y = under.para(MARGIN, 0, cut, WIDTH - 2 * MARGIN, SMALL, GREY_INK) if cut else 0
        y = _state_legend(under, y + 2)
        for strip in strips:
            framed = Image.new("RGB", (WIDTH, strip.height + 4), WHITE)
            framed.paste(strip, (MARGIN, 2))
            parts.append(framed)
        parts.append(under.img.crop((0, 0, WIDTH, y)))
    offset = sum(p.height for p in parts)
    drawn = _chosen(view)
    for step in drawn:
        block, boxes = _op_block(step, ranks)
        layout.ops[step.index] = (0, offset, WIDTH, offset + block.height)
        layout.panels |= {k: (b[0], b[1] + offset, b[2], b[3] + offset) for k, b in boxes.items()}
        parts.append(block)
        offset += block.height
    end, y = _Pen(200), 8
    more = len(view.steps) - len(drawn)
    notes = [f"... {count(more, 'more op')}: in the timeline above and the text summary"]
    notes = notes if more > 0 else []
    notes += view.notes
    for note in notes:
        y = end.para(MARGIN, y, note, WIDTH - 2 * MARGIN)
    if view.steps:
        end.draw.line((MARGIN, 0, WIDTH - MARGIN, 0), fill=LINE)
        y = _legend(end, y + 2)
    parts.append(end.img.crop((0, 0, WIDTH, y)))
    img = Image.new("RGB", (WIDTH, sum(p.height for p in parts)), WHITE)
    for p, at in zip(parts, itertools.accumulate([0] + [p.height for p in parts]), strict=False):
        img.paste(p, (0, at))
    return img, layout


def render_trace(trace: Trace | TraceView) -> Image.Image:
    """The whole trace as one RGB image."""
    return render(trace)[0]


def trace_png(trace: Trace | TraceView) -> bytes:
    """The PNG of :func:`render_trace`."""
    buf = io.BytesIO()
    render_trace(trace).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
