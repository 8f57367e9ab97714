"""Arrays as small binary snapshots: what one rank held, in at most 64 KiB.

A snapshot is a plain dict so that ipyparallel can pickle it off a rank and
ipywidgets can ship its ``data`` field to the browser as a binary buffer (no
JSON number lists).  Small arrays (<= :data:`EXACT_LIMIT` elements) travel
exactly; larger ones are reduced to block means on a grid of at most
:data:`SAMPLE_CELLS` cells and quantised to 16 bits, while min/max/mean of the
*full* array are computed exactly and kept beside the data, so the view can
say "downsampled" and still show true extremes.

This module needs only NumPy: it runs on the ranks (inside the recorder) and in
the kernel (decoding for text, PNG and tests).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

__all__ = [
    "EXACT_LIMIT",
    "MAX_BYTES",
    "SAMPLE_CELLS",
    "decode",
    "encode",
    "snapshot_size",
]

#: Hard cap on what one snapshot may cost on the wire (data + metadata).
MAX_BYTES = 64 * 1024
#: Arrays with at most this many elements are shipped exactly.
EXACT_LIMIT = 4096
#: Cells of a downsampled array; 2 bytes each, leaving room for metadata.
SAMPLE_CELLS = 30_000
#: Quantisation: 0..QMAX for finite values, QNAN for NaN/inf cells.
QMAX = 65534
QNAN = 65535


def _finite_stats(v: np.ndarray) -> dict[str, Any]:
    """min/max/mean over the finite values, plus how many were not finite.

    JSON (and so the widget state) cannot carry NaN, so non-finite values are
    counted instead of being folded into the statistics.
    """
    out: dict[str, Any] = {"min": None, "max": None, "mean": None, "nan": 0, "inf": 0}
    if v.size == 0:
        return out
    if v.dtype.kind == "f":
        finite = np.isfinite(v)
        if not finite.all():
            out["nan"] = int(np.isnan(v).sum())
            out["inf"] = int(v.size - finite.sum() - out["nan"])
            v = v[finite]
            if v.size == 0:
                return out
    out["min"] = float(v.min())
    out["max"] = float(v.max())
    out["mean"] = float(v.mean(dtype=np.float64))
    return out


def _factors(shape: tuple[int, ...], budget: int) -> list[int]:
    """Block sizes per axis so that the reduced grid has at most ``budget`` cells.

    Every axis longer than a common length ``L`` is cut down to about ``L``
    (the largest ``L`` that fits), so square arrays stay square and small
    leading axes (a batch of 8 images) keep full resolution, one slice each.
    """
    dims = [max(1, s) for s in shape]

    def reduced(limit: int) -> list[int]:
        return [math.ceil(d / math.ceil(d / limit)) if d > limit else d for d in dims]

    lo, hi = 1, max(dims)
    while lo < hi:  # largest limit whose grid fits the budget
        mid = (lo + hi + 1) // 2
        if math.prod(reduced(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return [math.ceil(d / lo) if d > lo else 1 for d in dims]


def _block_means(v: np.ndarray, factors: list[int]) -> np.ndarray:
    """Mean of each block (last blocks may be smaller), in float64.

    The last (contiguous) axis is reduced first: that pass reads the whole
    array sequentially and leaves a small array for the other axes.
    """
    out = v
    for axis in reversed(range(len(factors))):
        f = factors[axis]
        if f == 1:
            continue
        n = out.shape[axis]
        starts = np.arange(0, n, f)
        sums = np.add.reduceat(out, starts, axis=axis, dtype=np.float64)
        counts = np.minimum(starts + f, n) - starts
        shape = [1] * out.ndim
        shape[axis] = len(counts)
        out = sums / counts.reshape(shape)
    return np.asarray(out, dtype=np.float64)


def _exact_payload(a: np.ndarray) -> tuple[str, bytes]:
    kind = a.dtype.kind
    if kind == "c":
        pairs = np.stack([a.real, a.imag], axis=-1).astype("<f4")
        return "c8", pairs.tobytes()
    if kind == "i" and a.dtype.itemsize == 8:
        return "i8", a.astype("<i8").tobytes()
    if kind == "u" and a.dtype.itemsize == 8:
        return "u8", a.astype("<u8").tobytes()
    # bool, small ints, float16/32/64 (and bfloat16 given as float32): exact in float64
    return "f8", a.astype("<f8").tobytes()


def encode(a: np.ndarray, dtype: str | None = None, digest: bool = False) -> dict[str, Any]:
    """Snapshot of ``a``; ``dtype`` names the original (e.g. ``bfloat16`` sent as float32).

    With ``digest`` a CRC-32 of the full array's bytes is kept, so ranks that
    ought to hold identical results can be compared even when downsampled.
    """
    a = np.asarray(a)
    snap: dict[str, Any] = {
        "shape": list(a.shape),
        "dtype": dtype or str(a.dtype),
        "nbytes": int(a.nbytes),
        "digest": "",
    }
    if digest:
        snap["digest"] = f"{zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)):08x}"
    values = np.abs(a) if a.dtype.kind == "c" else a
    if values.dtype.kind == "b":
        values = values.astype(np.uint8)
    snap["stats"] = _finite_stats(values)
    if a.size <= EXACT_LIMIT:
        enc, data = _exact_payload(a)
        snap.update(exact=True, enc=enc, dshape=list(a.shape), factors=[1] * a.ndim, data=data)
        return snap
    factors = _factors(a.shape, SAMPLE_CELLS)
    means = _block_means(values, factors)
    finite = np.isfinite(means)
    lo = float(means[finite].min()) if finite.any() else 0.0
    hi = float(means[finite].max()) if finite.any() else 0.0
    q = np.full(means.shape, QNAN, dtype="<u2")
    if hi > lo:
        scaled = np.rint((means[finite] - lo) / (hi - lo) * QMAX)
        q[finite] = scaled.astype("<u2")
    else:
        q[finite] = 0
    snap.update(
        exact=False,
        enc="q16",
        dshape=list(means.shape),
        factors=factors,
        lo=lo,
        hi=hi,
        magnitude=a.dtype.kind == "c",
        data=q.tobytes(),
    )
    return snap


def decode(snap: dict[str, Any]) -> np.ndarray:
    """The values a snapshot carries: exact values, or block means (NaN = not finite)."""
    enc, shape, data = snap["enc"], tuple(snap["dshape"]), snap["data"]
    if enc == "f8":
        return np.frombuffer(data, "<f8").reshape(shape)
    if enc == "i8":
        return np.frombuffer(data, "<i8").reshape(shape)
    if enc == "u8":
        return np.frombuffer(data, "<u8").reshape(shape)
    if enc == "c8":
        pairs = np.frombuffer(data, "<f4").reshape((*shape, 2))
        return pairs[..., 0] + 1j * pairs[..., 1]
    if enc == "q16":
        q = np.frombuffer(data, "<u2").reshape(shape).astype(np.float64)
        out = snap["lo"] + q * ((snap["hi"] - snap["lo"]) / QMAX)
        out[q == QNAN] = np.nan
        return out
    raise ValueError(f"unknown snapshot encoding {enc!r}")


def snapshot_size(snap: dict[str, Any]) -> int:
    """Bytes this snapshot costs on the wire: its buffer plus its JSON metadata."""
    import json

    meta = {k: v for k, v in snap.items() if k != "data"}
    return len(snap["data"]) + len(json.dumps(meta, separators=(",", ":")))
