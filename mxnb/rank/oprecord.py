"""One op of a rank, as its op log, its check and its trace know it."""

from __future__ import annotations

import weakref
from typing import Any

from mxnb.protocol.messages import OpState
from mxnb.protocol.wording import op_text
from mxnb.rank import check, hooks
from mxnb.rank.groups import GroupInfo

__all__ = ["OpRecord"]


class OpRecord:
    """One op of this rank, from its call on: the log's, its check's and the trace's.

    Made for every op, so a plain class: the fields every op sets are set by
    ``__init__``, the rest are class-level defaults until something writes them
    (a dataclass setting all of them cost an op 0.15 us more, issue 18).
    """

    stream: str | None = None  # None: the default stream (see stream_name)
    prim: int | None = None  # point to point: the address of its MLX primitive
    evaluated: bool = False
    check: str = "off"  # off | pending | ok | mismatch | abandoned | refused
    # the posted check, from the op's call until its result is known
    posted: check.PendingCheck | None = None
    # -- what the trace notes, while it records (mxnb.rank.recorder, .evaltime) --
    t: float = 0.0  # when it was called, in seconds since the cell started (0: not traced)
    call_s: float | None = 0.0  # the Python call: building the graph node (None: in mx.compile)
    ref: weakref.ref[Any] | None = None  # the result, while it lives
    out: tuple[int, ...] | None = None  # the result's shape
    before: Any = "none"  # a handle on the input, or a word for why there is none
    after: Any = "none"  # the same for the result
    #: the evaluation that ran it: (eval_s, eval_by, eval_ops, eval_arrays, check_s)
    timing: tuple[float | None, str | None, int, int, float | None] | None = None
    eval_note: str | None = None  # why it has no eval_s (mxnb.rank.evaltime.NOTES)
    eval_no: int | None = None  # which of the cell's evaluations ran it (1, 2, ...)
    unordered: list[int] | None = None  # seqs run with it on its channel
    #: called while ``mx.compile`` traced its function: the MLX group passed
    #: (None: the world) is kept for the replays (mxnb.rank.compiled)
    in_trace: bool = False
    mlx_group: Any = None
    #: called while mx.vmap traced its function: the batch sizes MLX runs it
    #: over, which ``shape`` and ``out`` start with (mxnb.rank.vmapped)
    batch: tuple[int, ...] = ()

    def __init__(
        self,
        seq: int,
        op: str,
        mirror: GroupInfo,
        peer: int | None,  # world rank of src/dst
        shape: tuple[int, ...],
        dtype: str,
        where: hooks.RawSite | None,  # resolved and rendered only when a report asks
        called: str | None = None,  # the MLX function, if not op: recv_like is logged as recv
    ) -> None:
        self.seq, self.op, self.mirror, self.peer = seq, op, mirror, peer
        self.shape, self.dtype, self.where, self.called = shape, dtype, where, called or op

    @property
    def group(self) -> str:
        return self.mirror.describe()

    @property
    def group_ranks(self) -> tuple[int, ...]:
        return self.mirror.ranks

    @property
    def site(self) -> str:
        return hooks.resolve(self.where).describe() if self.where else ""

    def as_dict(self) -> OpState:
        return {
            "seq": self.seq, "op": self.op, "group": self.group,
            "group_ranks": self.group_ranks, "peer": self.peer, "shape": self.shape,
            "dtype": self.dtype, "site": self.site, "evaluated": self.evaluated,
            "check": self.check, "stream": self.stream or "default stream",
        }  # fmt: skip

    def describe(self) -> str:
        return op_text(self.op, self.seq, self.peer, self.dtype, self.shape)
