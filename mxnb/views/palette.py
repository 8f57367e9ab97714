"""The colours every view uses: one table, sent to the browser and used by the picture.

Ranks have fixed identity colours (lanes, arrows, provenance), taken from
Okabe and Ito's palette, which readers with deuteranopia or protanopia can
still tell apart; ranks past eight reuse them, and are always labelled with
their number too.  Values have their own sequential scale (dark blue to pale
yellow, readable in grey).  Timeline states carry a mark as well as a colour,
so no state is told by colour alone.
"""

from __future__ import annotations

__all__ = ["COLORMAP", "NAN", "RANK_COLORS", "STATES", "Color", "hex_color", "rank_color"]

Color = tuple[int, int, int]

RANK_COLORS: list[Color] = [
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167),
    (86, 180, 233), (213, 94, 0), (240, 228, 66), (60, 60, 60),
]  # fmt: skip
#: Value colours, low to high (a viridis-like ramp).
COLORMAP: list[Color] = [
    (24, 32, 84), (35, 100, 160), (40, 160, 150), (150, 205, 95), (250, 235, 150)
]  # fmt: skip
#: NaN and inf cells.
NAN: Color = (190, 190, 190)
#: Timeline lane states: fill, ink of the mark, the mark (ASCII: the picture's font).
STATES: dict[str, tuple[Color, Color, str]] = {
    "ok": ((214, 221, 230), (60, 60, 60), ""),
    "wrong": ((200, 30, 30), (255, 255, 255), "X"),
    "disagree": ((120, 60, 160), (255, 255, 255), "?"),
    "mismatched": ((170, 90, 0), (255, 255, 255), "!"),
    "missing": ((255, 255, 255), (200, 30, 30), "-"),
    "lazy": ((255, 255, 255), (110, 110, 110), "o"),
    "in_flight": ((245, 180, 20), (30, 30, 30), "..."),
}


def rank_color(rank: int) -> Color:
    return RANK_COLORS[rank % len(RANK_COLORS)]


def hex_color(c: Color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)
