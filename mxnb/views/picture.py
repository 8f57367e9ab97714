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

import io
import itertools
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from mxnb.protocol.wording import shape_text
from mxnb.trace import Trace
from mxnb.trace.text import ABSENT_TEXT, count, describe_value, tag_text
from mxnb.trace.view import StepView, TraceView, trace_view
from mxnb.views.palette import COLORMAP, RANK_COLORS, STATES, rank_color
from mxnb.views.pen import (
    ARROW_W,
    BODY,
    CLIP_INK,
    GREY_INK,
    HATCH,
    HEAD,
    INK,
    LANE_W,
    LINE,
    MARGIN,
    PANEL_W,
    RED,
    SMALL,
    WHITE,
    WIDTH,
    Box,
    Pen,
    dark,
    font,
    line_h,
    wrap,
)  # fmt: skip
from mxnb.views.plots import Band, bars, heatmap, numbered
from mxnb.views.scale import Scale, drawn_values, op_scale, short_num
from mxnb.views.strip import draw_strips, legend_items

__all__ = [
    "CLIP_INK", "COLORMAP", "HATCH", "MARGIN", "MAX_OPS", "RANK_COLORS", "RED", "WIDTH",
    "Layout", "render", "render_trace", "trace_png",
]  # fmt: skip

#: Ops drawn; numbers are written for up to NUM values (2-D: at most NUM_COLS columns).
#: Said under an all_max / all_min, whose result bars carry the winner's colour.
WINNERS_NOTE = "the bar under each result element has the colour of the rank whose input won"
#: Ops drawn in full (the timeline shows them all).
MAX_OPS = 6


@dataclass
class Layout:
    """Where each op block and each panel was drawn (x0, y0, x1, y1): tests look there."""

    ops: dict[int, Box] = field(default_factory=dict)
    panels: dict[tuple[int, int, str], Box] = field(default_factory=dict)  # (op, rank, side)


def _provenance(step: StepView, rank: int, side: str) -> list[Band]:
    """Who each part of this value came from (gather), goes to (scatter), or won (max/min)."""
    prov = step.provenance
    if prov is None:
        return []
    if step.op == "all_gather" and side == "after":
        return [(r, a, b, tag_text("gathered", rank=r)) for r, a, b in prov.blocks]
    if step.op == "sum_scatter" and side == "before":
        return [(r, a, b, tag_text("scattered", rank=r)) for r, a, b in prov.blocks]
    if prov.winners and side == "after":
        return [(r, i, i + 1, "") for i, r in enumerate(prov.winners)]
    return []


def _panel(pen: Pen, x: int, y: int, step: StepView, rank: int, side: str, scale: Scale) -> int:
    """One rank's value on one side: label, picture, and a summary when not all is shown."""
    snap, state = step.snap(rank, side)
    # dtype and shape, even without values
    meta = snap if state == "ok" and snap else step.panels[rank].types[side]
    label = f"{side}: " + (f"{meta['dtype']} {shape_text(meta['shape'])}" if meta else "nothing")
    top, y = y, y + line_h(SMALL)
    if state != "ok" or snap is None:  # no value: the reason, in words, on a hatched box
        words = step.panels[rank].side(side).text  # the view's own words (a send's: sent)
        words = "- (no array on this side)" if words == "-" else words
        lines = wrap(words, BODY, PANEL_W - 24)  # every word of the reason, never cut
        tall = 12 + len(lines) * line_h(BODY)
        pen.hatch((x, y, x + PANEL_W - 1, y + tall))
        widest = max(font(BODY).getlength(line) for line in lines)
        pen.draw.rectangle((x + 6, y + 6, x + 14 + widest, y + tall - 6), WHITE)
        pen.para(x + 10, y + 7, words, PANEL_W - 24, BODY, GREY_INK)
        bottom, shown = y + tall + 1, True
    else:
        v, dtype = drawn_values(snap), snap["dtype"]
        if dtype.startswith("complex"):
            label += ", |z| shown"
        if v.size == 0:
            pen.text(x, y + 2, "empty", BODY, GREY_INK)
            bottom, shown = y + line_h(BODY), True
        elif v.ndim == 0:
            pen.draw.rectangle((x, y + 2, x + 15, y + 17), fill=scale.color(float(v)), outline=INK)
            pen.text(x + 22, y + 1, short_num(float(v), 6, dtype), HEAD)
            bottom, shown = y + 21, True
        elif v.ndim == 1:
            bottom, shown = bars(pen, x, y + 2, v, scale, dtype, _provenance(step, rank, side))
        else:
            if v.ndim > 2:
                label += f", slice [{'0, ' * (v.ndim - 2)}:, :] shown"
            bands = _provenance(step, rank, side) if v.ndim == 2 else []
            bottom, shown = heatmap(pen, x, y + 2, v[(0,) * (v.ndim - 2)], scale, dtype, bands)
            shown = shown and v.ndim == 2
        if not (shown and snap["exact"]):
            # numbers too wide for their bars or cells are listed instead
            few = numbered(snap["shape"]) and snap["exact"]
            text = describe_value(snap, state, limit=v.size if few else 8)
            bottom = pen.para(x, bottom + 3, text, PANEL_W, SMALL, GREY_INK)
    pen.text(x, top, label, SMALL, GREY_INK, width=PANEL_W)
    return bottom


def _chip(pen: Pen, x: float, y: int, rank: int | None, width: float = 0) -> float:
    """The rank's identity colour as a filled label (some are too light for text on white)."""
    c = LINE if rank is None else rank_color(rank)
    label = f"rank {'?' if rank is None else rank}"
    width = width or font(BODY).getlength(label) + 12
    pen.draw.rounded_rectangle((x, y, x + width, y + 19), radius=4, fill=c)
    pen.text(x + width / 2, y + 10, label, BODY, WHITE if dark(c) else INK, anchor="mm")
    return x + width


def _label_w(step: StepView) -> float:
    """The widest number written under any bars of the op (0 if none)."""
    widths = [0.0]
    for r, side in itertools.product(step.panels, ("before", "after")):
        snap, state = step.snap(r, side)
        if state == "ok" and snap and len(snap["shape"]) == 1 and numbered(snap["shape"]):
            nums = [short_num(x, 4, snap["dtype"]) for x in drawn_values(snap)]
            widths += [font(SMALL).getlength(s) for s in nums]
    return max(widths)


def _op_block(step: StepView, ranks: list[int]) -> tuple[Image.Image, dict[Any, Box]]:
    """Header, a row per rank (before -> after), then transfers and what went wrong."""
    pen = Pen(120 + len(ranks) * 300 + 40 * (len(step.transfers) + 6))
    scale, x, width = op_scale(step), MARGIN, WIDTH - 2 * MARGIN
    scale.label_w = _label_w(step)
    pen.draw.line((MARGIN, 0, WIDTH - MARGIN, 0), fill=LINE)
    head_w = width - 230  # room for the colour scale on the right
    right = pen.text(x, 8, f"#{step.index} {step.name} on {step.group_text}", HEAD, width=head_w)
    pen.draw.line((right + 5, 17, right + 15, 17), fill=INK)  # the font has no em dash
    pen.text(right + 20, 8, step.site_text, HEAD, width=head_w - (right + 20 - x))
    if any(step.snap(r, s)[1] == "ok" for r in step.panels for s in ("before", "after")):
        hi = short_num(scale.hi, 3)
        gx = WIDTH - MARGIN - 95 - int(font(SMALL).getlength(hi))
        ink = CLIP_INK if scale.note else GREY_INK
        pen.text(gx - 5, 10, short_num(scale.lo, 3), SMALL, ink, anchor="ra")
        pen.gradient(gx, 12, 90, 10)
        pen.text(gx + 95, 10, hi, SMALL, ink)
    y, px = 8 + line_h(HEAD) + 8, MARGIN + LANE_W
    boxes: dict[tuple[int, int, str], Box] = {}
    for r in ranks:
        _chip(pen, x + 8, y, r, LANE_W - 14)
        if r not in step.panels:
            pen.text(px, y + 3, ABSENT_TEXT[step.absence(r)], BODY, GREY_INK)
            y += 28
            continue
        at = {"before": px, "after": px + PANEL_W + ARROW_W}
        bottom = max(_panel(pen, at[s], y + 3, step, r, s, scale) for s in at) + 3
        for side, left in at.items():  # one height for both frames of the row
            boxes[(step.index, r, side)] = box = (left - 4, y, left + PANEL_W + 3, bottom)
            bad = side == "after" and r in step.mismatch
            pen.draw.rectangle(box, outline=RED if bad else LINE, width=3 if bad else 1)
        pen.draw.rectangle((x, y, x + 3, bottom), fill=rank_color(r))
        pen.arrow(px + PANEL_W + 8, px + PANEL_W + ARROW_W - 14, (y + line_h(SMALL) + bottom) // 2)
        y = bottom + 8
        want = step.panels[r].expected
        if want is not None:  # the right result, under the wrong one
            y = pen.para(at["after"], y - 4, f"expected {want.text}", PANEL_W, SMALL, RED) + 4
    for t in step.transfers:
        tx = pen.text(_chip(pen, x, y, t.src) + 4, y + 2, "->")
        tx = pen.text(_chip(pen, tx + 4, y, t.dst) + 3, y + 2, t.what + ("; " if t.note else ""))
        y = pen.para(tx, y + 2, t.note, x + width - tx, BODY, RED) if t.note else y + 24
    won = WINNERS_NOTE if step.provenance and step.provenance.winners else ""
    for note, ink in (
        (step.inputs_note, RED), (step.mismatch_text, RED), (step.order_note, RED),
        (scale.note, CLIP_INK),
        (won, GREY_INK),
    ):  # fmt: skip
        y = pen.para(x, y, note, width, BODY, ink) if note else y
    return pen.img.crop((0, 0, WIDTH, y + 6)), boxes


def _legend(pen: Pen, y: int) -> int:
    """What the marks mean, in one line under the ops."""
    pen.gradient(MARGIN, y + 3, 60, 10)
    x = pen.text(MARGIN + 66, y, "values: low to high (one colour scale per op)", SMALL, GREY_INK)
    pen.hatch((int(x) + 16, y + 1, int(x) + 40, y + 14))
    x = pen.text(x + 46, y, "no value", SMALL, GREY_INK)
    pen.draw.rectangle((x + 16, y + 1, x + 40, y + 14), outline=RED, width=3)
    x = pen.text(x + 46, y, "wrong result (expected value under it)", SMALL, GREY_INK)
    pen.draw.polygon([(x + 16, y + 12), (x + 24, y + 12), (x + 20, y + 4)], fill=RED)
    pen.text(x + 30, y, "value beyond a clipped scale", SMALL, GREY_INK)
    return y + line_h(SMALL) + 6


def _chosen(view: TraceView) -> list[StepView]:
    """The ops drawn in full: those that went wrong first, then the first ones, in call order.

    A folded loop is drawn once; the timeline above shows every op.
    """
    tl = view.timeline
    cols = [c for c, f in tl.shown() if f is None or c < f.first + f.period]
    bad = [c for c in cols if tl.columns[c].state != "ok"][:MAX_OPS]
    rest = [c for c in cols if c not in bad][: MAX_OPS - len(bad)]
    return [view.steps[k] for c in sorted(bad + rest) for k in tl.columns[c].steps]


def _state_legend(pen: Pen, y: int) -> int:
    x: float = MARGIN
    for st, words in legend_items():
        fill, ink, mark = STATES[st]
        if x + 20 + font(SMALL).getlength(words) > WIDTH - MARGIN:
            x, y = MARGIN, y + line_h(SMALL) + 4
        pen.draw.rounded_rectangle((x, y + 1, x + 16, y + 15), 3, fill=fill, outline=(150,) * 3)
        if mark:
            pen.text(x + 8, y + 8, mark, 10, ink, anchor="mm")
        x = pen.text(x + 20, y, words, SMALL, GREY_INK) + 14
    return y + line_h(SMALL) + 8


def render(trace: Trace | TraceView) -> tuple[Image.Image, Layout]:
    """The picture, and where its ops and panels are."""
    view = trace if isinstance(trace, TraceView) else trace_view(trace)
    ranks = view.ranks
    top, lines = Pen(80), view.text().splitlines()
    top.text(MARGIN, 10, lines[0], HEAD)
    y = 10 + line_h(HEAD)
    if not view.steps and len(lines) > 1:
        y = top.para(MARGIN, y + 2, lines[1], WIDTH - 2 * MARGIN, BODY, GREY_INK)
    parts, layout = [top.img.crop((0, 0, WIDTH, y + 4))], Layout()
    if view.steps:
        strips, cut = draw_strips(view, WIDTH - 2 * MARGIN, font)
        under = Pen(60)
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
    end, y = Pen(200), 8
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
