"""A static picture of a trace: the image fallback for HTML exports and GitHub.

One row per op, one column per rank, each cell the rank's value before and
after (heatmap for 2-D and up, bars for 1-D, the number for scalars), on one
colour scale per op so ranks can be compared.  Written with NumPy and zlib
only: the PNG format needs nothing more for an RGB image.
"""

from __future__ import annotations

import itertools
import struct
import zlib

import numpy as np

from mxnb.protocol.snapshot import decode
from mxnb.trace import Step, Trace
from mxnb.trace.text import count
from mxnb.views.font import GLYPH_H, text_mask

__all__ = ["COLORMAP", "encode_png", "render_trace", "trace_png"]

#: Anchors of the sequential colour map (low to high), shared with the widget.
COLORMAP = [(24, 32, 84), (35, 100, 160), (40, 160, 150), (150, 205, 95), (250, 235, 150)]
THUMB = 56
PAD = 8
LABEL_W = 200
COL_W = 2 * THUMB + 24
ROW_H = THUMB + 14
MAX_ROWS = 12
INK = (30, 30, 30)
GREY_INK = (110, 110, 110)
GREY = (205, 205, 205)
RED = (210, 40, 40)
WHITE = (255, 255, 255)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def colorize(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values -> RGB on :data:`COLORMAP`; NaN/inf grey."""
    anchors = np.array(COLORMAP, dtype=np.float64)
    t = np.zeros(v.shape) if hi <= lo else (np.asarray(v, np.float64) - lo) / (hi - lo)
    finite = np.isfinite(t)
    t = np.clip(np.where(finite, t, 0.0), 0.0, 1.0) * (len(anchors) - 1)
    i = np.minimum(t.astype(int), len(anchors) - 2)
    f = (t - i)[..., None]
    rgb = anchors[i] * (1 - f) + anchors[i + 1] * f
    rgb[~finite] = GREY
    return rgb.astype(np.uint8)


def _put_text(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    mask = text_mask(text)
    h, w = mask.shape
    w = min(w, img.shape[1] - x)
    if w <= 0:
        return
    img[y : y + h, x : x + w][mask[:, :w]] = color


def _frame(img: np.ndarray, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
    img[y - 2 : y, x - 2 : x + w + 2] = color
    img[y + h : y + h + 2, x - 2 : x + w + 2] = color
    img[y : y + h, x - 2 : x] = color
    img[y : y + h, x + w : x + w + 2] = color


def _thumb(values: np.ndarray, lo: float, hi: float, dtype: str) -> np.ndarray:
    """A THUMB x THUMB picture of one array."""
    out = np.full((THUMB, THUMB, 3), 255, np.uint8)
    v = np.abs(values) if np.iscomplexobj(values) else np.asarray(values, np.float64)
    if v.size == 1:
        n = values.reshape(-1)[0]
        text = str(bool(n)) if dtype == "bool" else f"{n:.4g}" if np.isrealobj(n) else "cplx"
        _put_text(out, text[:7], 2, THUMB // 2 - GLYPH_H, INK)
        return out
    if v.ndim == 1:
        cols = min(THUMB, v.size)
        edges = np.linspace(0, v.size, cols + 1).astype(int)
        bars = [np.nanmean(v[a:b]) if b > a else np.nan for a, b in itertools.pairwise(edges)]
        base = min(max(0.0, lo), hi)
        span = max(hi - lo, 1e-300)
        width = THUMB // cols
        for k, b in enumerate(bars):
            if not np.isfinite(b):
                continue
            y0 = int((hi - max(b, base)) / span * (THUMB - 1))
            y1 = int((hi - min(b, base)) / span * (THUMB - 1)) + 1
            out[y0:y1, k * width : (k + 1) * width] = COLORMAP[1]
        return out
    while v.ndim > 2:
        v = v[0]
    h, w = v.shape
    scale = THUMB / max(h, w)
    rows = np.minimum((np.arange(max(1, round(h * scale))) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(max(1, round(w * scale))) / scale).astype(int), w - 1)
    pic = colorize(v[np.ix_(rows, cols)], lo, hi)
    out[: pic.shape[0], : pic.shape[1]] = pic
    return out


def _scale(step: Step) -> tuple[float, float]:
    """One scale per op over what is drawn (block means when downsampled)."""
    los, his = [], []
    for r in step.ranks:
        for side in ("before", "after"):
            snap, state = step.snap(r, side)
            if state == "ok" and snap and snap["stats"]["min"] is not None:
                los.append(snap["stats"]["min"] if snap["exact"] else snap["lo"])
                his.append(snap["stats"]["max"] if snap["exact"] else snap["hi"])
    return (min(los), max(his)) if los else (0.0, 1.0)


def _hatch() -> np.ndarray:
    out = np.full((THUMB, THUMB, 3), 240, np.uint8)
    yy, xx = np.mgrid[:THUMB, :THUMB]
    out[(xx + yy) % 8 == 0] = GREY
    return out


def render_trace(trace: Trace) -> np.ndarray:
    """The whole trace as one RGB image."""
    ranks = list(range(trace.nranks)) or trace.ranks
    rows = trace.steps[:MAX_ROWS]
    more = len(trace.steps) - len(rows)
    top = PAD + 32
    height = top + ROW_H * max(1, len(rows)) + 30 + (16 if more else 0) + PAD
    width = max(PAD * 2 + LABEL_W + COL_W * len(ranks), 280)
    img = np.full((height, width, 3), 255, np.uint8)
    _put_text(img, f"mxnb trace: {count(len(trace.steps), 'op')}", PAD, PAD, INK)
    for c, r in enumerate(ranks):
        _put_text(img, f"rank {r}", PAD + LABEL_W + c * COL_W, PAD, INK)
        _put_text(img, "before", PAD + LABEL_W + c * COL_W, PAD + 14, GREY_INK)
        _put_text(img, "after", PAD + LABEL_W + c * COL_W + THUMB + 12, PAD + 14, GREY_INK)
    if not rows:
        _put_text(img, "no ops recorded", PAD, top + 8, INK)
    for k, step in enumerate(rows):
        y = top + k * ROW_H
        _put_text(img, f"#{step.index} {step.op}"[:24], PAD, y + 8, INK)
        group = "world" if step.group == "world" else "ranks " + ",".join(map(str, step.members))
        _put_text(img, group[:24], PAD, y + 24, INK)
        lo, hi = _scale(step)
        for c, r in enumerate(ranks):
            x = PAD + LABEL_W + c * COL_W
            if r not in step.ranks:
                continue
            for j, side in enumerate(("before", "after")):
                snap, state = step.snap(r, side)
                xs = x + j * (THUMB + 12)
                if state == "ok" and snap is not None:
                    pic = _thumb(decode(snap), lo, hi, snap["dtype"])
                elif state in ("none", "template"):
                    pic = np.full((THUMB, THUMB, 3), 255, np.uint8)
                    _put_text(pic, "-", THUMB // 2 - 3, THUMB // 2 - GLYPH_H, INK)
                else:
                    pic = _hatch()
                img[y : y + THUMB, xs : xs + THUMB] = pic
                bad = side == "after" and r in step.mismatch
                _frame(img, xs, y, THUMB, THUMB, RED if bad else GREY)
            _put_text(img, ">", x + THUMB + 3, y + THUMB // 2 - GLYPH_H, INK)
    legend_y = top + ROW_H * max(1, len(rows))
    _put_text(img, "hatched: no value, not evaluated", PAD, legend_y, GREY_INK)
    _put_text(img, "red frame: ranks disagree", PAD, legend_y + 14, GREY_INK)
    if more:
        _put_text(img, f"... {more} more ops", PAD, height - PAD - 10, INK)
    return img


def trace_png(trace: Trace) -> bytes:
    """The PNG of :func:`render_trace`."""
    return encode_png(render_trace(trace))
