"""The ``mx.distributed`` operations, and their metadata as checked mode sends it.

Op names are defined once here: the rank side wraps them, the kernel side
merges and explains them.  :class:`Meta` is the fixed-size int64 vector the
ranks exchange before data moves (a few hundred bytes, never the data).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AGREEING",
    "BACKENDS",
    "COLLECTIVES",
    "DTYPES",
    "OPS",
    "PEER_ARG",
    "POINT_TO_POINT",
    "WIDTH",
    "Meta",
]

#: MLX's backends that mxnb starts ranks on (the CPU ones: jaccl and nccl need other hardware).
BACKENDS = ("mpi", "ring")

#: Every communication operation of ``mlx.core.distributed``.
OPS = (
    "all_sum",
    "all_gather",
    "all_max",
    "all_min",
    "sum_scatter",
    "send",
    "recv",
    "recv_like",
)
#: The ops every member of a group calls together.
COLLECTIVES = ("all_sum", "all_gather", "all_max", "all_min", "sum_scatter")
#: Collectives after which every member should hold the same result.
AGREEING = ("all_sum", "all_gather", "all_max", "all_min")
#: Point-to-point ops, as logged (``recv_like`` is logged as ``recv``).
POINT_TO_POINT = ("send", "recv")
#: Where MLX's point-to-point ops take their peer: (position, keyword).
PEER_ARG = {"send": (1, "dst"), "recv": (2, "src"), "recv_like": (1, "src")}

#: Ops as numbered in :class:`Meta` (``recv_like`` is sent as ``recv``).
_META_OPS = ("all_sum", "all_gather", "all_max", "all_min", "sum_scatter", "send", "recv")
DTYPES = (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64", "bfloat16", "complex64",
)  # fmt: skip
MAX_NDIM = 10
#: int64 entries of one encoded :class:`Meta`.
WIDTH = 4 + MAX_NDIM


@dataclass(frozen=True)
class Meta:
    """What one rank says about one op before its data moves."""

    op: str
    seq: int  # per group (collectives) or per peer (point to point)
    shape: tuple[int, ...]
    dtype: str

    def encode(self) -> np.ndarray:
        # every op encodes once; a loop repeats a few signatures, so their
        # vectors are made once and copied (issue 18: ~3 us less per op)
        v = _template(self.op, self.dtype, self.shape).copy()
        v[1] = self.seq
        return v

    @staticmethod
    def same_call(mine: np.ndarray, theirs: np.ndarray) -> bool:
        """Whether ``theirs`` (one row or several) says exactly what ``mine`` says,
        sequence number included: the common case, told without decoding
        (comparing bytes: a tenth of NumPy's elementwise compare on 14 numbers)."""
        ours = mine.tobytes()
        return theirs.tobytes() == ours * (theirs.size // mine.size)

    @classmethod
    def decode(cls, v: np.ndarray) -> Meta:
        ndim = int(v[3])
        dtype = DTYPES[int(v[2])] if 0 <= v[2] < len(DTYPES) else "?"
        shape = tuple(int(x) for x in v[4 : 4 + min(ndim, MAX_NDIM)])
        return cls(_META_OPS[int(v[0])], int(v[1]), shape, dtype)


@functools.lru_cache(maxsize=256)
def _template(op: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    v = np.full(WIDTH, -1, dtype=np.int64)
    v[0] = _META_OPS.index(op)
    v[2] = DTYPES.index(dtype) if dtype in DTYPES else -2
    v[3] = len(shape)
    v[4 : 4 + min(len(shape), MAX_NDIM)] = shape[:MAX_NDIM]
    v.flags.writeable = False
    return v
