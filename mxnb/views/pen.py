"""Drawing for the static pictures: fonts, sizes, colours of ink, and a pen on a block.

Pillow's built-in FreeType font (``ImageFont.load_default(size=...)``,
Pillow >= 10.1) needs no font files; it covers ASCII and little more, so all
text drawn with it is ASCII.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mxnb.views.palette import Color
from mxnb.views.scale import Scale

Box = tuple[int, int, int, int]
RED: Color = (200, 30, 30)
INK, GREY_INK, CLIP_INK = (30, 30, 30), (95, 95, 95), (140, 85, 0)
WHITE, LINE, HATCH = (255, 255, 255), (205, 205, 205), (222, 222, 222)
HEAD, BODY, SMALL = 14, 13, 12  # font sizes (px)
MARGIN, LANE_W, PANEL_W, ARROW_W = 12, 78, 400, 40
WIDTH = 2 * MARGIN + LANE_W + 2 * PANEL_W + ARROW_W
BAR_H, MAP_H, CELL_MAX, CELL_H, SLOT_MAX = 56, 144, 48, 18, 44


@functools.cache
def font(size: int) -> Any:
    return ImageFont.load_default(size=size)


def line_h(size: int) -> int:
    return size + 5


def dark(c: Color) -> bool:
    """Whether white text reads better than black on ``c``."""
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 145


def fit(text: str, size: int, width: float) -> str:
    """``text`` cut with an ellipsis so that it fits ``width`` pixels."""
    if font(size).getlength(text) <= width:
        return text
    while text and font(size).getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def wrap(text: str, size: int, width: float) -> list[str]:
    """Greedy word wrap: long notes go on several lines instead of off the edge."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font(size).getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(fit(word, size, width))
    return lines


class Pen:
    """One block of the picture being drawn, full width, cropped when done."""

    def __init__(self, height: int, width: int = WIDTH) -> None:
        self.img = Image.new("RGB", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.img)

    def text(self, x: float, y: float, s: str, size: int = BODY, fill: Color = INK, **kw) -> float:
        """One line (cut to ``width`` px if given); returns its right edge."""
        s = fit(s, size, kw.pop("width")) if "width" in kw else s
        self.draw.text((x, y), s, font=font(size), fill=fill, **kw)
        return x + font(size).getlength(s)

    def para(self, x: float, y: int, s: str, width: float, size: int = BODY, fill=INK) -> int:
        """Wrapped text; returns the y below it."""
        for line in wrap(s, size, width):
            self.text(x, y, line, size, fill)
            y += line_h(size)
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
