"""Checked communication: ranks agree on op, shape and dtype before data moves.

Each op posts a tiny nonblocking metadata exchange on the group's mirror
communicator when it is *called* (MLX only records the op then), and the
exchange is completed when the op's result is *evaluated*, before MLX moves
any data.  A disagreement becomes :class:`CommMismatch` on every rank
involved, naming both sides, instead of garbage, an aborted job or a hang.

Metadata is a fixed vector of int64, sent as bytes, so one exchange is a few
hundred bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mxnb.errors import CommInterrupted, CommMismatch
from mxnb.protocol.ops import META_BYTES, Meta
from mxnb.protocol.wording import op_text, ranks_text, typed_text
from mxnb.rank.groups import GroupInfo

__all__ = [
    "PendingCheck",
    "abandon",
    "done",
    "drain_world",
    "dtype_name",
    "post",
    "verify",
    "wait",
]

TAG_SEND, TAG_ACK = 7301, 7302


_dtype_names: dict[Any, str] = {}


def dtype_name(dtype: Any) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = str(dtype).removeprefix("mlx.core.")
    return name


@dataclass(slots=True)
class PendingCheck:
    """One posted exchange; ``describe`` says what this rank is waiting for."""

    seq: int  # the op's sequence number on this rank (Hooks.seq)
    op: str
    mirror: GroupInfo
    peer: int | None  # group rank of the peer, point to point only
    requests: list[Any]
    buffers: list[Any]  # what this rank sent (bytes) and what it receives (bytearray)

    @property
    def mine(self) -> Meta:
        """What this rank said, decoded only when a report needs it."""
        return Meta.decode(self.buffers[0])

    def op_text(self) -> str:
        peer = None if self.peer is None else self.mirror.ranks[self.peer]
        mine = self.mine
        return op_text(self.op, self.seq, peer, mine.dtype, mine.shape)

    def describe(self) -> str:
        if self.peer is None:
            return f"the other ranks of {self.mirror.describe()} to call {self.op}"
        peer = self.mirror.ranks[self.peer]
        verb = "receive it" if self.op == "send" else "send"
        return f"rank {peer} to {verb}" + ("" if self.op == "send" else " to this rank")


def post(op: str, call_seq: int, out: bytes, mirror: GroupInfo, peer: int | None) -> PendingCheck:
    """Start the exchange for one op (``out``: what this rank says, encoded); returns at once."""
    comm = mirror.comm
    if peer is None:
        recv = bytearray(META_BYTES * len(mirror.ranks))
        reqs = [comm.Iallgather(out, recv)]
    else:
        recv = bytearray(META_BYTES)
        if op == "send":
            reqs = [comm.Isend(out, dest=peer, tag=TAG_SEND), comm.Irecv(recv, peer, TAG_ACK)]
        else:
            reqs = [comm.Irecv(recv, peer, TAG_SEND), comm.Isend(out, dest=peer, tag=TAG_ACK)]
    return PendingCheck(call_seq, op, mirror, peer, reqs, [out, recv])


#: Seconds a wait spins on MPI before it starts to yield the core.  The peer's
#: half of an exchange usually lands within microseconds; ``sleep(0)`` costs a
#: trip through the scheduler (measured ~80 us here), which doubled a 1 KB
#: all_sum's time (issue 18).  Open MPI spins the same way inside its own calls.
SPIN_S = 200e-6


def done(check: PendingCheck) -> bool:
    reqs = check.requests
    if len(reqs) == 1:
        return bool(reqs[0].Test())
    return bool(_mpi().Request.Testall(reqs))


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def wait(check: PendingCheck, on_wait: Any = None) -> None:
    """Block (interruptibly) until the exchange completes, then verify it."""
    __tracebackhide__ = True
    try:
        # the peers' half usually landed while the graph was built: no clock then
        if not done(check):
            _spin_then_sleep(check, on_wait)
    except KeyboardInterrupt:
        raise CommInterrupted(
            f"stopped waiting for {check.describe()} ({check.op_text()})"
        ) from None
    verify(check)


def _spin_then_sleep(check: PendingCheck, on_wait: Any) -> None:
    spins = 0
    clock = time.perf_counter
    spin_until = clock() + SPIN_S
    while not done(check):
        if clock() < spin_until:
            continue
        if spins == 200 and on_wait is not None:
            on_wait(check)
        spins += 1
        time.sleep(0 if spins < 200 else 0.0005)


def verify(check: PendingCheck) -> None:
    """Raise :class:`CommMismatch` if the completed exchange disagrees."""
    __tracebackhide__ = True
    m = check.mirror
    mine, recv = check.buffers
    if check.peer is None:
        if Meta.same_call(mine, recv):  # every rank said the same: nothing to decode
            return
        message = _collective_problem(Meta.decode_all(recv), m)
    else:
        if Meta.same_type(mine, recv):  # same dtype and shape on both ends
            return
        message = _p2p_problem(check.op, check.mine, Meta.decode(recv), m, check.peer)
    if message:
        raise CommMismatch(message)


def _collective_problem(metas: list[Meta], m: GroupInfo) -> str | None:
    by_op: dict[str, list[int]] = {}
    for i, meta in enumerate(metas):
        by_op.setdefault(meta.op, []).append(m.ranks[i])
    if len(by_op) > 1:
        sides = "; ".join(f"{ranks_text(r)} called {op}" for op, r in by_op.items())
        return (
            f"collective mismatch on {m.describe()}: {sides}. Every rank of a group "
            "must call the same collectives in the same order."
        )
    by_type: dict[str, list[int]] = {}
    for i, meta in enumerate(metas):
        by_type.setdefault(typed_text(meta.dtype, meta.shape), []).append(m.ranks[i])
    if len(by_type) > 1:
        op = metas[0].op
        sides = ", ".join(
            f"{ranks_text(r)} {'has' if len(r) == 1 else 'have'} {t}" for t, r in by_type.items()
        )
        return (
            f"{op} on {m.describe()}: {sides}. Every rank must pass the same shape "
            "and dtype (MPI would return garbage or abort the job)."
        )
    return None


def _p2p_problem(op: str, mine: Meta, theirs: Meta, m: GroupInfo, peer: int) -> str | None:
    me, other = m.comm.Get_rank(), peer
    sender, receiver = (mine, theirs) if op == "send" else (theirs, mine)
    s_rank, r_rank = (me, other) if op == "send" else (other, me)
    sent = typed_text(sender.dtype, sender.shape)
    expected = typed_text(receiver.dtype, receiver.shape)
    if sent == expected:
        return None
    s_world, r_world = m.ranks[s_rank], m.ranks[r_rank]
    where = "" if m.label == "world" else f" on {m.describe()}"
    return (
        f"rank {s_world} sends {sent} to rank {r_world}, rank {r_world} "
        f"expects {expected} from rank {s_world}{where}. Shape and dtype "
        "of a send and its recv must match."
    )


def abandon(check: PendingCheck) -> None:
    """Cancel what can be cancelled; the mirror is replaced afterwards."""
    from mpi4py import MPI

    for req in check.requests:
        if req != MPI.REQUEST_NULL:
            try:
                req.Cancel()
            except Exception:  # sends may not be cancellable; the reset covers them
                pass


def drain_world(settle: float = 0.02) -> list[tuple[int, int]]:
    """Discard data messages that arrived for a recv an interrupt abandoned.

    A peer whose check had passed may have sent its data before this rank was
    interrupted between its own check and MLX's recv.  Left in place, the
    message would land in the next recv from that peer, in a later cell: a
    silent wrong number.  MLX sends on the world communicator with tag 0, the
    one mpi4py's ``COMM_WORLD`` names.  Returns (world source, bytes) per
    message.  Called by every rank together after their mirrors were reset
    (a collective), so what was sent before the interrupt has arrived.
    """
    from mpi4py import MPI

    comm, status, found = MPI.COMM_WORLD, MPI.Status(), []
    deadline = time.monotonic() + settle
    while True:
        if comm.Iprobe(MPI.ANY_SOURCE, 0, status):
            n = status.Get_count(MPI.BYTE)
            comm.Recv([bytearray(n), MPI.BYTE], status.Get_source(), 0)
            found.append((status.Get_source(), n))
        elif time.monotonic() > deadline:
            return found
