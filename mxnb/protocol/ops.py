"""The ``mx.distributed`` operations, and their metadata as checked mode sends it.

Op names are defined once here: the rank side wraps them, the kernel side
merges and explains them.  :class:`Meta` is encoded as a fixed-size vector of
int64 the ranks exchange before data moves (112 bytes a rank, never the data).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "AGREEING",
    "BACKENDS",
    "COLLECTIVES",
    "DTYPES",
    "ITEMSIZE",
    "META_BYTES",
    "OPS",
    "PEER_ARG",
    "POINT_TO_POINT",
    "WIDTH",
    "Meta",
    "encode",
    "nbytes",
    "op_code",
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
#: Bytes per element of each of :data:`DTYPES`.
ITEMSIZE = dict(zip(DTYPES, (1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 2, 8), strict=True))


def nbytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of an array of ``shape`` and ``dtype``; a dtype mxnb does not know
    counts as the widest element (a hang's time allowance: more time, never less)."""
    return math.prod(shape) * ITEMSIZE.get(dtype, 8)


MAX_NDIM = 10
#: int64 entries of one encoded :class:`Meta`.
WIDTH = 4 + MAX_NDIM
#: Bytes of one encoded :class:`Meta`.
META_BYTES = 8 * WIDTH


class Meta(NamedTuple):
    """What one rank says about one op before its data moves.

    A named tuple, not a frozen dataclass: one is made per checked op, and a
    frozen dataclass's ``__init__`` costs about 1 us more (issue 18).
    """

    op: str
    seq: int  # per group (collectives) or per peer (point to point)
    shape: tuple[int, ...]
    dtype: str

    def encode(self) -> bytes:
        return encode(self.op, self.seq, self.shape, self.dtype)

    @staticmethod
    def same_call(mine: bytes, theirs: bytes | bytearray) -> bool:
        """Whether ``theirs`` (one vector or several) says exactly what ``mine`` says,
        sequence number included: the common case, told without decoding."""
        return theirs == mine * (len(theirs) // len(mine))

    @staticmethod
    def same_type(mine: bytes, theirs: bytes | bytearray) -> bool:
        """Whether two vectors name the same dtype and shape (a send and its recv)."""
        return mine[_TYPED:] == theirs[_TYPED:]

    @classmethod
    def decode(cls, v: bytes | bytearray) -> Meta:
        return cls._of(_VECTOR.unpack_from(v))

    @classmethod
    def decode_all(cls, v: bytes | bytearray) -> list[Meta]:
        """The vectors of every rank, as an all-gather leaves them."""
        return [cls._of(row) for row in _VECTOR.iter_unpack(v)]

    @classmethod
    def _of(cls, v: tuple[int, ...]) -> Meta:
        ndim = v[3]
        dtype = DTYPES[v[2]] if 0 <= v[2] < len(DTYPES) else "?"
        return cls(_META_OPS[v[0]], v[1], tuple(v[4 : 4 + min(ndim, MAX_NDIM)]), dtype)


def encode(op: str, seq: int, shape: tuple[int, ...], dtype: str) -> bytes:
    """What :meth:`Meta.encode` gives, without making the :class:`Meta`.

    Every checked op encodes once, and a tuple made only to be encoded cost
    0.3 us of it (issue 18): the op log calls this, and a :class:`Meta` is
    decoded back from the bytes only when a mismatch is described.  A loop
    repeats a few signatures, so the bytes around the sequence number are
    made once per signature, and the vector travels as bytes.
    """
    head, tail = _template(op, dtype, shape)
    return head + _INT64(seq) + tail


_INT64 = struct.Struct("<q").pack
#: One encoded vector.  Plain ``struct``, not NumPy: a rank imports this module
#: as it starts, and NumPy's import cost each rank 0.12 s of CPU there (issue 18).
_VECTOR = struct.Struct(f"<{WIDTH}q")
#: Bytes before the dtype in an encoded vector: the op and the sequence number.
_TYPED = 2 * 8


def op_code(op: str) -> int:
    """An op's number in the vector (mxnb's op path in C writes the same vector)."""
    return _META_OPS.index(op)


@functools.lru_cache(maxsize=256)
def _template(op: str, dtype: str, shape: tuple[int, ...]) -> tuple[bytes, bytes]:
    """An encoded vector's bytes before and after the sequence number."""
    dims = list(shape[:MAX_NDIM]) + [-1] * (MAX_NDIM - min(len(shape), MAX_NDIM))
    code = DTYPES.index(dtype) if dtype in DTYPES else -2
    raw = _VECTOR.pack(op_code(op), -1, code, len(shape), *dims)
    return raw[:8], raw[16:]
