"""The timeline drawn for the static picture: rank lanes, op columns, folded loops.

The same model as the widget's timeline (:mod:`mxnb.trace.timeline`), drawn
with Pillow for viewers without a kernel.  A cell with more columns than fit
one line wraps onto further strips, up to :data:`MAX_STRIPS`.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from mxnb.trace.text import count
from mxnb.trace.timeline import LANE_STATES, Fold
from mxnb.trace.view import StepView, TraceView
from mxnb.views.palette import STATES, rank_color

__all__ = ["draw_strips", "legend_items"]

MIN_COL_W, LANE_H, HEAD_H, FOOT_H, LABEL_W = 34, 22, 18, 34, 70
MAX_STRIPS = 4
GREY, INK, SPAN = (120, 120, 120), (30, 30, 30), (150, 150, 150)


def _dark(c: tuple[int, int, int]) -> bool:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 145


def _lanes(d: ImageDraw.ImageDraw, lane: dict[int, int], width: int, font: Any) -> None:
    for r, y in lane.items():
        c, mid = rank_color(r), y + LANE_H // 2
        d.line((LABEL_W, mid, width, mid), fill=tuple(v // 2 + 127 for v in c))
        d.rounded_rectangle((2, y + 2, LABEL_W - 8, y + LANE_H - 2), radius=8, fill=c)
        ink = (255, 255, 255) if _dark(c) else INK
        d.text(((LABEL_W - 6) / 2, mid), f"rank {r}", font=font(12), fill=ink, anchor="mm")


def _step(d: ImageDraw.ImageDraw, s: StepView, lane: dict[int, int], cx: float, w: float,
          font: Any) -> None:  # fmt: skip
    """One op in its slot of a column: its group's span, each lane's state, its arrows."""
    ys = [lane[r] for r in s.lanes if r in lane]
    if not s.transfers and len(ys) > 1:
        d.rounded_rectangle((cx, min(ys) + 1, cx + w, max(ys) + LANE_H - 1), 5, outline=SPAN)
    for r, st in s.lanes.items():
        if r not in lane:
            continue
        fill, ink, mark = STATES[st]
        box = (cx + 2, lane[r] + 4, cx + w - 2, lane[r] + LANE_H - 4)
        d.rounded_rectangle(box, 3, fill=fill, outline=SPAN)
        if mark:
            mid = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            d.text(mid, mark, font=font(11), fill=ink, anchor="mm")
    drawn = [t for t in s.transfers if t.drawn]  # each message once, where it lands
    n = len(drawn)
    for k, t in enumerate(drawn):
        if t.src not in lane or t.dst not in lane:
            continue
        ax = cx + w / 2 + (k - (n - 1) / 2) * min(5, w / (n + 1))
        y0, y1 = lane[t.src] + LANE_H / 2, lane[t.dst] + LANE_H / 2
        up = 1 if y1 > y0 else -1
        ink = STATES["wrong"][0] if t.note else rank_color(t.src)
        d.line((ax, y0 + up * 6, ax, y1 - up * 9), fill=ink, width=2)
        tip = y1 - up * 4
        d.polygon([(ax - 4, tip - up * 6), (ax + 4, tip - up * 6), (ax, tip)], fill=ink)


def _col_name(view: TraceView, c: int) -> str:
    return view.steps[view.timeline.columns[c].steps[0]].head


def _col_width(view: TraceView, cols: list[tuple[int, Fold | None]], font: Any) -> int:
    """One width for every column, wide enough for the longest op name among them
    ("gather" must not run into the name beside it)."""
    widest = max((font(10).getlength(_col_name(view, c)) for c, _ in cols), default=0)
    return max(MIN_COL_W, int(widest) + 8)


def _brackets(d: ImageDraw.ImageDraw, cols: list[tuple[int, Fold | None]], y: int,
              font: Any, col_w: int) -> None:  # fmt: skip
    """A fold: a bracket under one iteration's columns, with its count."""
    k = 0
    while k < len(cols):
        fold = cols[k][1]
        if fold is None:
            k += 1
            continue
        e = k
        while e + 1 < len(cols) and cols[e + 1][1] is fold:
            e += 1
        x0, x1 = LABEL_W + k * col_w + 3, LABEL_W + (e + 1) * col_w - 3
        d.line((x0, y - 4, x0, y, x1, y, x1, y - 4), fill=INK, width=1)
        d.text(((x0 + x1) / 2, y + 2), f"x{fold.times}", font=font(11), fill=INK, anchor="ma")
        k = e + 1


def _strip(view: TraceView, cols: list[tuple[int, Fold | None]], width: int,
           font: Any, col_w: int) -> Image.Image:  # fmt: skip
    ranks = view.ranks
    bottom = HEAD_H + len(ranks) * LANE_H
    img = Image.new("RGB", (width, bottom + FOOT_H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    lane = {r: HEAD_H + i * LANE_H for i, r in enumerate(ranks)}
    _lanes(d, lane, width, font)
    for k, (c, _) in enumerate(cols):
        x = LABEL_W + k * col_w
        steps = [view.steps[i] for i in view.timeline.columns[c].steps]
        d.text((x + col_w / 2, 2), _col_name(view, c), font=font(10), fill=GREY, anchor="ma")
        w = (col_w - 6) / len(steps)
        for j, s in enumerate(steps):
            _step(d, s, lane, x + 3 + j * w, w, font)
        d.text((x + col_w / 2, bottom + 2), f"#{steps[0].index}", font=font(10), fill=GREY,
               anchor="ma")  # fmt: skip
    _brackets(d, cols, bottom + 16, font, col_w)
    return img


def draw_strips(view: TraceView, width: int, font: Any) -> tuple[list[Image.Image], str]:
    """The timeline as strips ``width`` px wide, and a note if it was cut short."""
    shown = view.timeline.shown()
    col_w = _col_width(view, shown, font)
    per = max(1, (width - LABEL_W) // col_w)
    chunks = [shown[i : i + per] for i in range(0, len(shown), per)]
    strips = [_strip(view, c, width, font, col_w) for c in chunks[:MAX_STRIPS]]
    left = len(shown) - per * MAX_STRIPS
    note = f"... the timeline goes on for {count(left, 'more column')}" if left > 0 else ""
    return strips, note


def legend_items() -> list[tuple[str, str]]:
    """(state, words) in the legend's order: worst first, as the widget lists them."""
    return [(st, words.split(" (")[0]) for st, words in LANE_STATES.items()]
