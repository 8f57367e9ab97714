"""The rank colours stay apart for colour-blind readers (simulated, Viénot et al. 1999)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mxnb.views.palette import RANK_COLORS, STATES

#: Dichromat simulation in linear RGB (Viénot, Brettel and Mollon, 1999).
SIMULATE = {
    "deuteranopia": [[0.29275, 0.70725, 0.0], [0.29275, 0.70725, 0.0], [-0.02234, 0.02234, 1.0]],
    "protanopia": [[0.11238, 0.88762, 0.0], [0.11238, 0.88762, 0.0], [0.00401, -0.00401, 1.0]],
}
#: Matplotlib's tab10, first eight: its red and purple merge for a deuteranope.
TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
         (140, 86, 75), (227, 119, 194), (127, 127, 127)]  # fmt: skip


def _seen(colors, matrix) -> list[np.ndarray]:
    c = np.asarray(colors, np.float64) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(lin @ np.asarray(matrix).T, 0, 1)
    return list(255 * np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055))


def closest(colors, matrix) -> float:
    return min(np.linalg.norm(a - b) for a, b in itertools.combinations(_seen(colors, matrix), 2))


@pytest.mark.parametrize("kind", sorted(SIMULATE))
def test_rank_colours_stay_apart_for_dichromats(kind):
    assert closest(RANK_COLORS, SIMULATE[kind]) > 35
    if kind == "deuteranopia":  # the check can fail: a common palette does
        assert closest(TAB10, SIMULATE[kind]) < 30


def test_timeline_states_differ_by_mark_not_only_by_colour():
    marks = [mark for _, _, mark in STATES.values()]
    assert len(set(marks)) == len(marks)  # "ok" alone has none
