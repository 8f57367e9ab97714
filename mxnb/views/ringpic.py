"""The ring algorithm's rounds as one still picture, for a lesson read without a kernel.

The widget steps through the ring replay (:mod:`mxnb.trace.ring`) one round
at a time; a stored notebook on GitHub shows no widget, so this draws every
round at once, top to bottom.  Each chunk carries a dot per rank whose input
it already holds: the reader sees the dots gather until one chunk per rank
has all of them (the end of reduce-scatter), then those full chunks spread
(all-gather), without comparing a single number.  A chunk that has just
arrived is framed in its sender's colour.  The last line compares the replay
with what MLX really left on each rank.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mxnb.protocol.wording import ranks_text
from mxnb.trace.ring import HONESTY, KEY, RingReplay
from mxnb.views import pen as P
from mxnb.views.palette import rank_color
from mxnb.views.scale import short_num

__all__ = ["RingSteps"]

#: px: a rank's chip, a chunk's height, a dot, between ranks; ranks side by side
CHIP_W, CELL_H, DOT, GAP, PER_ROW = 56, 40, 7, 14, 4


@dataclass(frozen=True)
class Stage:
    """The start, or one round: what every rank holds after it, and what just arrived."""

    title: str
    chunks: dict[int, list[np.ndarray | None]]
    holders: dict[int, list[list[int]]]  # rank -> chunk -> ranks whose input it holds
    arrived: dict[tuple[int, int], int]  # (rank, chunk) -> the rank it came from


def _stages(replay: RingReplay) -> list[Stage]:
    titles = replay.titles()
    out = [Stage(titles[0], replay.start, replay.start_holders, {})]
    for rnd, title in zip(replay.rounds, titles[1:], strict=True):
        arrived = {(p.dst, p.chunk): p.src for p in rnd.passes}
        out.append(Stage(title, rnd.after, rnd.holders, arrived))
    return out


def _chunk_text(values: np.ndarray | None, dtype: str) -> str:
    if values is None:
        return "-"
    return " ".join(short_num(float(v), 4, dtype) for v in np.ravel(values))


@dataclass
class RingSteps:
    """The ring replay of one traced op: its text, and its picture in a notebook."""

    index: int  # the op's number in its trace (#1 first)
    replay: RingReplay
    got: dict[int, np.ndarray | None]  # what MLX left on each rank

    def __repr__(self) -> str:
        return self.replay.text() + "\n" + self.verdict()

    def verdict(self) -> str:
        """Whether the replay's last round equals what each rank really got."""
        differ = []
        for r in self.replay.ranks:
            got = self.got.get(r)
            if got is None or not np.array_equal(np.ravel(got), self.replay.result(r)):
                differ.append(r)
        if not differ:
            return f"after the last round every rank holds what MLX's {self.replay.op} gave it"
        return f"the replay differs from what MLX gave {ranks_text(differ)}"

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.image().save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def image(self) -> Image.Image:
        replay = self.replay
        dtype = str(next(c for cs in replay.start.values() for c in cs if c is not None).dtype)
        stages = _stages(replay)
        n = len(replay.ranks)
        chunks = [c for st in stages for cs in st.chunks.values() for c in cs]
        texts = [_chunk_text(c, dtype) for c in chunks]
        cell_w = int(min(140, max(44, max(P.font(P.SMALL).getlength(t) for t in texts) + 10)))
        rank_w = CHIP_W + n * (cell_w + 3) + GAP
        per_row = min(n, PER_ROW)  # four ranks side by side; more wrap
        width = max(P.WIDTH, 2 * P.MARGIN + per_row * rank_w)
        rows = -(-n // per_row)
        stage_h = P.line_h(P.BODY) + rows * (CELL_H + 8) + 10
        pen = P.Pen(120 + len(stages) * stage_h, width)
        title = f"{replay.op} #{self.index} on a ring of {n} ranks, round by round"
        pen.text(P.MARGIN, 8, title, P.HEAD)
        key = f"{HONESTY}. {KEY}"
        y = pen.para(P.MARGIN, 8 + P.line_h(P.HEAD), key, width - 2 * P.MARGIN, P.SMALL, P.GREY_INK)
        for st in stages:
            pen.draw.line((P.MARGIN, y + 4, width - P.MARGIN, y + 4), fill=P.LINE)
            pen.text(P.MARGIN, y + 8, P.fit(st.title, P.BODY, width - 2 * P.MARGIN), P.BODY)
            y += 8 + P.line_h(P.BODY)
            for i, r in enumerate(replay.ranks):
                x = P.MARGIN + (i % per_row) * rank_w
                top = y + (i // per_row) * (CELL_H + 8)
                self._rank(pen, x, top, r, st, cell_w, dtype)
            y += rows * (CELL_H + 8) + 2
        bad = "differs" in self.verdict()
        y = pen.para(
            P.MARGIN, y + 6, self.verdict(), width - 2 * P.MARGIN, P.BODY, P.RED if bad else P.INK
        )
        return pen.img.crop((0, 0, width, y + 8))

    def _rank(self, pen: P.Pen, x: int, y: int, r: int, st: Stage, cell_w: int, dtype: str) -> None:
        chunks, holders = st.chunks[r], st.holders[r]
        c = rank_color(r)
        pen.draw.rounded_rectangle((x, y + 10, x + CHIP_W - 8, y + 28), 9, fill=c)
        pen.text(x + 6, y + 12, f"rank {r}", P.SMALL, P.WHITE if P.dark(c) else P.INK)
        x += CHIP_W
        for k, values in enumerate(chunks):
            box = (x, y, x + cell_w, y + CELL_H)
            sender = st.arrived.get((r, k))
            if sender is None:
                pen.draw.rectangle(box, fill=P.WHITE, outline=P.LINE)
            else:
                pen.draw.rectangle(box, fill=P.WHITE, outline=rank_color(sender), width=3)
            text = P.fit(_chunk_text(values, dtype), P.SMALL, cell_w - 8)
            pen.text(x + 5, y + 5, text, P.SMALL, P.GREY_INK if values is None else P.INK)
            step = min(DOT + 3, (cell_w - 10 - DOT) / max(1, len(chunks) - 1))
            for j, who in enumerate(holders[k]):
                cx = x + 5 + j * step
                dot = (cx, y + CELL_H - DOT - 6, cx + DOT, y + CELL_H - 6)
                pen.draw.ellipse(dot, fill=rank_color(who))
            x += cell_w + 3
