"""A 3x5 pixel font for labels in the static PNG: no font files, no Pillow.

Each glyph is five rows of three pixels, ``#`` for ink.  Lower-case
text is drawn with the upper-case shapes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GLYPH_H", "GLYPH_W", "text_mask"]

GLYPH_W, GLYPH_H = 3, 5

_GLYPHS = {
    "A": ".#. #.# ### #.# #.#",
    "B": "##. #.# ##. #.# ##.",
    "C": ".## #.. #.. #.. .##",
    "D": "##. #.# #.# #.# ##.",
    "E": "### #.. ##. #.. ###",
    "F": "### #.. ##. #.. #..",
    "G": ".## #.. #.# #.# .##",
    "H": "#.# #.# ### #.# #.#",
    "I": "### .#. .#. .#. ###",
    "J": "..# ..# ..# #.# .#.",
    "K": "#.# #.# ##. #.# #.#",
    "L": "#.. #.. #.. #.. ###",
    "M": "#.# ### ### #.# #.#",
    "N": "##. #.# #.# #.# #.#",
    "O": ".#. #.# #.# #.# .#.",
    "P": "##. #.# ##. #.. #..",
    "Q": ".#. #.# #.# ##. .##",
    "R": "##. #.# ##. #.# #.#",
    "S": ".## #.. .#. ..# ##.",
    "T": "### .#. .#. .#. .#.",
    "U": "#.# #.# #.# #.# ###",
    "V": "#.# #.# #.# #.# .#.",
    "W": "#.# #.# ### ### #.#",
    "X": "#.# #.# .#. #.# #.#",
    "Y": "#.# #.# .#. .#. .#.",
    "Z": "### ..# .#. #.. ###",
    "0": "### #.# #.# #.# ###",
    "1": ".#. ##. .#. .#. ###",
    "2": "##. ..# .#. #.. ###",
    "3": "##. ..# .#. ..# ##.",
    "4": "#.# #.# ### ..# ..#",
    "5": "### #.. ##. ..# ##.",
    "6": ".## #.. ### #.# ###",
    "7": "### ..# .#. .#. .#.",
    "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ##.",
    " ": "... ... ... ... ...",
    "_": "... ... ... ... ###",
    "-": "... ... ### ... ...",
    ">": "#.. .#. ..# .#. #..",
    "<": "..# .#. #.. .#. ..#",
    ":": "... .#. ... .#. ...",
    "(": ".#. #.. #.. #.. .#.",
    ")": ".#. ..# ..# ..# .#.",
    ".": "... ... ... ... .#.",
    ",": "... ... ... .#. #..",
    "[": "##. #.. #.. #.. ##.",
    "]": ".## ..# ..# ..# .##",
    "/": "..# ..# .#. #.. #..",
    "#": "#.# ### #.# ### #.#",
    "?": "##. ..# .#. ... .#.",
    "=": "... ### ... ### ...",
    "!": ".#. .#. .#. ... .#.",
    "+": "... .#. ### .#. ...",
    "*": "... #.# .#. #.# ...",
}


def _glyph(ch: str) -> np.ndarray:
    rows = _GLYPHS.get(ch.upper(), _GLYPHS["?"]).split()
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """Boolean ink mask of ``text`` (one line), one blank column between glyphs."""
    if not text:
        return np.zeros((GLYPH_H * scale, 0), dtype=bool)
    cols = []
    for ch in text:
        cols.append(_glyph(ch))
        cols.append(np.zeros((GLYPH_H, 1), dtype=bool))
    mask = np.concatenate(cols[:-1], axis=1)
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)
