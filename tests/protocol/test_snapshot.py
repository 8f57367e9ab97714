"""Array snapshots: exact when small, at most 64 KiB when large, stats always exact."""

from __future__ import annotations

import numpy as np
import pytest

from mxnb.protocol.snapshot import (
    EXACT_LIMIT,
    MAX_BYTES,
    SAMPLE_CELLS,
    decode,
    encode,
    snapshot_size,
)

DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64",
]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_arrays_round_trip_exactly(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    if dtype == "complex64":
        a = a + 1j * a[::-1]
    snap = encode(a)
    assert snap["exact"] and snap["dtype"] == dtype and snap["shape"] == [2, 3, 4]
    assert isinstance(snap["data"], bytes)
    got = decode(snap)
    assert got.shape == a.shape
    np.testing.assert_array_equal(got, a.astype(got.dtype))
    assert snapshot_size(snap) <= MAX_BYTES


def test_int64_beyond_float_precision_stays_exact():
    a = np.array([2**62 + 1, -(2**61) - 3], dtype=np.int64)
    snap = encode(a)
    assert snap["enc"] == "i8"
    assert decode(snap).tolist() == a.tolist()


def test_bfloat16_keeps_its_name():
    snap = encode(np.array([1.5, -2.0], np.float32), dtype="bfloat16")
    assert snap["dtype"] == "bfloat16" and decode(snap).tolist() == [1.5, -2.0]


def test_exact_limit_is_4096_elements():
    assert encode(np.zeros(EXACT_LIMIT))["exact"]
    assert not encode(np.zeros(EXACT_LIMIT + 1))["exact"]


def test_4096x4096_float32_fits_in_64_kib_with_exact_stats():
    a = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    snap = encode(a, digest=True)
    size = snapshot_size(snap)
    assert size <= MAX_BYTES, size
    assert len(snap["data"]) == 2 * snap["dshape"][0] * snap["dshape"][1]
    assert snap["dshape"] == [171, 171] and snap["factors"] == [24, 24]
    assert not snap["exact"] and snap["enc"] == "q16"
    st = snap["stats"]
    assert st["min"] == float(a.min()) and st["max"] == float(a.max())
    assert st["mean"] == pytest.approx(float(a.mean(dtype=np.float64)), abs=1e-12)
    # the data are block means, to within the 16-bit quantisation step
    starts = np.arange(0, 4096, 24)
    sizes = np.minimum(starts + 24, 4096) - starts
    sums = np.add.reduceat(np.add.reduceat(a, starts, axis=1), starts, axis=0)
    step = (snap["hi"] - snap["lo"]) / 65534
    np.testing.assert_allclose(decode(snap), sums / np.outer(sizes, sizes), atol=step, rtol=1e-5)


def test_any_size_fits():
    for shape in [(16_000_000,), (8, 1024, 1024), (3, 5, 7, 11, 13), (1, 300_001)]:
        snap = encode(np.ones(shape, np.float32))
        assert snapshot_size(snap) <= MAX_BYTES, shape
        assert np.prod(snap["dshape"]) <= SAMPLE_CELLS


def test_small_leading_axes_keep_full_resolution():
    snap = encode(np.zeros((8, 1024, 1024), np.float32))
    assert snap["dshape"][0] == 8 and snap["factors"][0] == 1
    assert snap["dshape"][1] == snap["dshape"][2]


def test_non_finite_values_are_counted_not_averaged():
    a = np.ones(10_000)
    a[:3] = np.nan
    a[5] = np.inf
    snap = encode(a)
    assert snap["stats"] == {"min": 1.0, "max": 1.0, "mean": 1.0, "nan": 3, "inf": 1}
    assert np.isnan(decode(snap)[0])
    exact = encode(np.array([np.nan, -np.inf, 2.0]))
    assert exact["stats"]["min"] == 2.0 and exact["stats"]["nan"] == 1


def test_constant_and_empty_arrays():
    snap = encode(np.full(10_000, 3.5))
    assert np.all(decode(snap) == 3.5)
    empty = encode(np.zeros((0, 3)))
    assert empty["exact"] and empty["stats"]["min"] is None and decode(empty).shape == (0, 3)


def test_large_complex_shows_magnitude():
    a = np.full(5000, 3 + 4j, np.complex64)
    snap = encode(a)
    assert snap["magnitude"] and np.allclose(decode(snap), 5.0)


def test_digest_tells_equal_from_different():
    a = np.arange(10_000, dtype=np.float32)
    b = a.copy()
    b[7] += 1
    assert encode(a, digest=True)["digest"] == encode(a.copy(), digest=True)["digest"]
    assert encode(a, digest=True)["digest"] != encode(b, digest=True)["digest"]
    assert encode(a)["digest"] == ""
