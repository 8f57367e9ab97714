"""The hang picture: who waits for whom, with the cycle or the missing peer marked.

Ranks sit on a circle in their colours; an arrow from A to B says "A waits
on B".  Arrows of a cycle are red and thick; an arrow to a rank that already
finished or failed (a peer that will never come) is red and dashed, and that
rank is ringed.  Under the circle each rank's line and the likely cause are
written out, so the picture stands on its own in a saved notebook.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from mxnb.views.palette import STATES, rank_color
from mxnb.views.pen import font, wrap

if TYPE_CHECKING:
    from mxnb.kernel.waitgraph import WaitGraph

__all__ = ["render_waits", "waits_png"]

WIDTH, MARGIN, NODE = 760, 16, 26
INK, GREY, RED = (30, 30, 30), (110, 110, 110), STATES["wrong"][0]


def _arrow(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float],
           ink: tuple[int, int, int], width: int, dashed: bool) -> None:  # fmt: skip
    """From the edge of node ``a`` to the edge of node ``b``, bowed to the right."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    dist = math.hypot(dx, dy) or 1.0
    ux, uy = dx / dist, dy / dist
    bow = 18.0  # two ranks waiting on each other get two arrows, not one on top of the other
    mx, my = (x0 + x1) / 2 - uy * bow, (y0 + y1) / 2 + ux * bow
    pts = []
    for k in range(21):
        t = k / 20
        pts.append(((1 - t) ** 2 * x0 + 2 * (1 - t) * t * mx + t * t * x1,
                    (1 - t) ** 2 * y0 + 2 * (1 - t) * t * my + t * t * y1))  # fmt: skip
    pts = [p for p in pts if math.dist(p, a) > NODE + 2 and math.dist(p, b) > NODE + 6]
    if len(pts) < 2:
        return
    for k, (p, q) in enumerate(itertools.pairwise(pts)):
        if not dashed or k % 2 == 0:
            d.line((p, q), fill=ink, width=width)
    (px, py), (qx, qy) = pts[-2], pts[-1]
    ang = math.atan2(qy - py, qx - px)
    tip = (qx + 8 * math.cos(ang), qy + 8 * math.sin(ang))
    left = (qx + 6 * math.cos(ang + 2.2), qy + 6 * math.sin(ang + 2.2))
    right = (qx + 6 * math.cos(ang - 2.2), qy + 6 * math.sin(ang - 2.2))
    d.polygon([tip, left, right], fill=ink)


def render_waits(graph: WaitGraph, cause: str = "") -> Image.Image:
    n = len(graph.ranks)
    radius = 0 if n == 1 else max(70, min(190, 34 * n / math.pi))
    cx, cy = WIDTH / 2, MARGIN + 30 + radius + NODE
    turn = [2 * math.pi * i / n for i in range(n)]
    where = {
        r.rank: (cx + radius * math.sin(a), cy - radius * math.cos(a))
        for r, a in zip(graph.ranks, turn, strict=True)
    }
    lines = [r.text() for r in graph.ranks] + ([f"Likely cause: {cause}"] if cause else [])
    wrapped = [
        (w, line.startswith("Likely cause"))
        for line in lines
        for w in wrap(line, 13, WIDTH - 2 * MARGIN)
    ]
    under = 14 if any(r.host for r in graph.ranks) else 0  # a host line under the nodes
    height = int(cy + radius + NODE + 40 + under + 18 * len(wrapped) + MARGIN)
    img = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((MARGIN, MARGIN), "who waits for whom (an arrow from A to B: A waits on B)",
           font=font(14), fill=INK)  # fmt: skip
    in_cycle = {r for c in graph.cycles for r in c}
    for r in graph.ranks:
        for peer in r.waits_on:
            if peer not in where:
                continue
            cyc = r.rank in in_cycle and peer in in_cycle
            gone = peer in graph.missing
            ink = RED if cyc or gone else GREY
            _arrow(d, where[r.rank], where[peer], ink, 3 if cyc else 2, dashed=gone)
    for r in graph.ranks:
        x, y = where[r.rank]
        c = rank_color(r.rank)
        if r.rank in graph.missing:
            d.ellipse(
                (x - NODE - 6, y - NODE - 6, x + NODE + 6, y + NODE + 6), outline=RED, width=3
            )
        d.ellipse((x - NODE, y - NODE, x + NODE, y + NODE), fill=c, outline=INK)
        light = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 145
        d.text((x, y), f"rank {r.rank}", font=font(12), fill=INK if light else (255, 255, 255),
               anchor="mm")  # fmt: skip
        below = y + NODE + 4
        if r.host:  # the ranks span hosts: where this one runs, under its node
            d.text((x, below), r.host, font=font(11), fill=GREY, anchor="ma")
            below += 14
        tag = {"done": "finished", "failed": "raised", "silent": "silent"}.get(r.status, "")
        if tag:
            d.text((x, below), tag, font=font(12), fill=RED, anchor="ma")
    y = int(cy + radius + NODE + 30 + under)
    for line, is_cause in wrapped:
        d.text((MARGIN, y), line, font=font(13), fill=RED if is_cause else INK)
        y += 18
    return img


def waits_png(graph: WaitGraph, cause: str = "") -> bytes:
    buf = io.BytesIO()
    render_waits(graph, cause).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
