"""Checked communication: ranks agree on op, shape and dtype before data moves.

Each op posts a tiny nonblocking metadata exchange on the group's mirror
communicator when it is *called* (MLX only records the op then), and the
exchange is completed when the op's result is *evaluated*, before MLX moves
any data.  A disagreement becomes :class:`CommMismatch` on every rank
involved, naming both sides, instead of garbage, an aborted job or a hang.

Metadata is a fixed vector of int64, so one exchange is a few hundred bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mxnb.engine.comm import Mirror

__all__ = ["CommInterrupted", "CommMismatch", "Meta", "PendingCheck", "post", "wait"]

OPS = ("all_sum", "all_gather", "all_max", "all_min", "sum_scatter", "send", "recv")
DTYPES = (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64", "bfloat16", "complex64",
)  # fmt: skip
MAX_NDIM = 10
WIDTH = 4 + MAX_NDIM
TAG_SEND, TAG_ACK = 7301, 7302
#: Reductions Open MPI cannot do on C bool: the whole job aborts (MPI_ERR_OP).
BOOL_ABORTS = ("all_sum", "all_max", "all_min", "sum_scatter")


class CommMismatch(RuntimeError):
    """Ranks disagree about an op; raised on every rank involved."""


class CommInterrupted(RuntimeError):
    """This rank stopped waiting for its peers (the user or mxnb interrupted it)."""


@dataclass(frozen=True)
class Meta:
    op: str
    seq: int  # per group (collectives) or per peer (point to point)
    shape: tuple[int, ...]
    dtype: str

    def encode(self) -> np.ndarray:
        v = np.full(WIDTH, -1, dtype=np.int64)
        v[0] = OPS.index(self.op)
        v[1] = self.seq
        v[2] = DTYPES.index(self.dtype) if self.dtype in DTYPES else -2
        v[3] = len(self.shape)
        v[4 : 4 + min(len(self.shape), MAX_NDIM)] = self.shape[:MAX_NDIM]
        return v

    @classmethod
    def decode(cls, v: np.ndarray) -> Meta:
        ndim = int(v[3])
        dtype = DTYPES[int(v[2])] if 0 <= v[2] < len(DTYPES) else "?"
        shape = tuple(int(x) for x in v[4 : 4 + min(ndim, MAX_NDIM)])
        return cls(OPS[int(v[0])], int(v[1]), shape, dtype)

    def typed(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


_dtype_names: dict[Any, str] = {}


def dtype_name(dtype: Any) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = str(dtype).removeprefix("mlx.core.")
    return name


@dataclass
class PendingCheck:
    """One posted exchange; ``describe`` says what this rank is waiting for."""

    seq: int  # the op's sequence number on this rank (hooks.OpCall.seq)
    op: str
    mine: Meta
    mirror: Mirror
    peer: int | None  # group rank of the peer, point to point only
    requests: list[Any]
    buffers: list[np.ndarray]
    posted: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        if self.peer is None:
            return f"the other ranks of {self.mirror.describe()} to call {self.op}"
        peer = self.mirror.ranks[self.peer]
        verb = "receive it" if self.op == "send" else "send"
        return f"rank {peer} to {verb}" + ("" if self.op == "send" else " to this rank")


def post(op: str, call_seq: int, mine: Meta, mirror: Mirror, peer: int | None) -> PendingCheck:
    """Start the exchange for one op; returns at once."""
    comm = mirror.comm
    out = mine.encode()
    if peer is None:
        recv = np.empty((comm.Get_size(), WIDTH), dtype=np.int64)
        reqs = [comm.Iallgather(out, recv)]
        bufs = [out, recv]
    else:
        recv = np.empty(WIDTH, dtype=np.int64)
        if op == "send":
            reqs = [comm.Isend(out, dest=peer, tag=TAG_SEND), comm.Irecv(recv, peer, TAG_ACK)]
        else:
            reqs = [comm.Irecv(recv, peer, TAG_SEND), comm.Isend(out, dest=peer, tag=TAG_ACK)]
        bufs = [out, recv]
    return PendingCheck(call_seq, op, mine, mirror, peer, reqs, bufs)


def done(check: PendingCheck) -> bool:
    from mpi4py import MPI

    return bool(MPI.Request.Testall(check.requests))


def wait(check: PendingCheck, on_wait: Any = None) -> None:
    """Block (interruptibly) until the exchange completes, then verify it."""
    __tracebackhide__ = True
    spins = 0
    try:
        while not done(check):
            if spins == 200 and on_wait is not None:
                on_wait(check)
            spins += 1
            time.sleep(0 if spins < 200 else 0.0005)
    except KeyboardInterrupt:
        raise CommInterrupted(
            f"stopped waiting for {check.describe()} ({check.op} #{check.seq})"
        ) from None
    verify(check)


def verify(check: PendingCheck) -> None:
    """Raise :class:`CommMismatch` if the completed exchange disagrees."""
    __tracebackhide__ = True
    m = check.mirror
    recv = check.buffers[1]
    if check.peer is None:
        metas = [Meta.decode(row) for row in recv]
        message = _collective_problem(metas, m)
    else:
        message = _p2p_problem(check.op, check.mine, Meta.decode(recv), m, check.peer)
    if message:
        raise CommMismatch(message)


def _who(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _collective_problem(metas: list[Meta], m: Mirror) -> str | None:
    by_op: dict[str, list[int]] = {}
    for i, meta in enumerate(metas):
        by_op.setdefault(meta.op, []).append(m.ranks[i])
    if len(by_op) > 1:
        sides = "; ".join(f"{_who(r)} called {op}" for op, r in by_op.items())
        return (
            f"collective mismatch on {m.describe()}: {sides}. Every rank of a group "
            "must call the same collectives in the same order."
        )
    by_type: dict[str, list[int]] = {}
    for i, meta in enumerate(metas):
        by_type.setdefault(meta.typed(), []).append(m.ranks[i])
    if len(by_type) > 1:
        op = metas[0].op
        sides = ", ".join(f"{_who(r)} has {t}" for t, r in by_type.items())
        return (
            f"{op} on {m.describe()}: {sides}. Every rank must pass the same shape "
            "and dtype (MPI would return garbage or abort the job)."
        )
    return None


def _p2p_problem(op: str, mine: Meta, theirs: Meta, m: Mirror, peer: int) -> str | None:
    me, other = m.comm.Get_rank(), peer
    sender, receiver = (mine, theirs) if op == "send" else (theirs, mine)
    s_rank, r_rank = (me, other) if op == "send" else (other, me)
    if sender.typed() == receiver.typed():
        return None
    s_world, r_world = m.ranks[s_rank], m.ranks[r_rank]
    where = "" if m.label == "world" else f" on {m.describe()}"
    return (
        f"rank {s_world} sends {sender.typed()} to rank {r_world}, rank {r_world} "
        f"expects {receiver.typed()} from rank {s_world}{where}. Shape and dtype "
        "of a send and its recv must match."
    )


def bool_trap(op: str, dtype: str) -> str | None:
    if op in BOOL_ABORTS and dtype == "bool":
        return (
            f"{op} on bool arrays aborts the whole MPI job (Open MPI has no such "
            "reduction for C bool). Cast first, e.g. x.astype(mx.int32)."
        )
    return None


def abandon(check: PendingCheck) -> None:
    """Cancel what can be cancelled; the mirror is replaced afterwards."""
    from mpi4py import MPI

    for req in check.requests:
        if req != MPI.REQUEST_NULL:
            try:
                req.Cancel()
            except Exception:  # sends may not be cancellable; the reset covers them
                pass
