"""What each of MLX's backends can do: an op one cannot do is refused at the call.

MLX 0.32 on a CPU has two backends.  ``mpi`` (Open MPI) has no
``sum_scatter``.  ``ring`` (TCP sockets between neighbouring ranks) has no
``Group.split`` and no ``sum_scatter``, and moves messages only between
neighbours.  MLX itself says so only when the op is evaluated, on its
communication thread for a ring ``send`` or ``recv``, where the error has
been known to leave the other ranks waiting forever.  mxnb refuses such a
call where it is made, on every rank that makes it, before any data moves,
naming the backend and what to do instead.  The refusals subclass
``RuntimeError``, as MLX's own errors do.

The ranks learn their backend from ``MXNB_BACKEND``, set when mxnb starts
them (``python -m mxnb.rank``).
"""

from __future__ import annotations

import os

from mxnb.errors import BackendUnsupported, UnsupportedReduction

__all__ = ["BOOL_ABORTS", "NAME", "bool_trap", "refuse", "screen"]

#: This rank's backend (one of ``mxnb.protocol.ops.BACKENDS``).
NAME = os.environ.get("MXNB_BACKEND", "mpi")

_INSTEAD_OF_SCATTER = (
    "all_sum gives the same numbers: all_sum(x)[rank * k:(rank + 1) * k] "
    "with k = x.shape[0] // size"
)
#: Reductions Open MPI cannot do on C bool: the whole job aborts (MPI_ERR_OP).
#: MLX's ring reduces bool (measured), so this is MPI's alone.
BOOL_ABORTS = ("all_sum", "all_max", "all_min", "sum_scatter")

_USE_MPI = "use the mpi backend (%mxdist --backend mpi, or --backend mpi on the cell)"


def screen(
    op: str, dtype: str, rank: int, peer: int | None, size: int, backend: str = NAME
) -> None:
    """Every check of a call against its backend, in one place; nearly free for the
    common case (a collective on numbers), as it runs for every op."""
    __tracebackhide__ = True
    if dtype == "bool" and backend == "mpi":
        bool_trap(op, dtype)
    if op == "sum_scatter" or (peer is not None and backend == "ring"):
        refuse(op, rank, peer, size, backend)


def bool_trap(op: str, dtype: str) -> None:
    """Refuse a reduction that would abort the whole MPI job."""
    __tracebackhide__ = True
    if op in BOOL_ABORTS and dtype == "bool":
        raise UnsupportedReduction(
            f"{op} on bool arrays aborts the whole MPI job (Open MPI has no such "
            "reduction for C bool). Cast first, e.g. x.astype(mx.int32)."
        )


def refuse(
    op: str, rank: int = 0, peer: int | None = None, size: int = 0, backend: str = NAME
) -> None:
    """Raise :class:`BackendUnsupported` if ``backend`` cannot do this call."""
    __tracebackhide__ = True
    where = f"MLX's {backend} backend"
    if op == "sum_scatter":
        raise BackendUnsupported(f"sum_scatter is not available on {where}; {_INSTEAD_OF_SCATTER}.")
    if backend != "ring":
        return
    if op == "split":
        raise BackendUnsupported(
            f"Group.split is not available on {where}: it has only the world group. "
            f"For subgroups, {_USE_MPI}."
        )
    if op in ("send", "recv") and peer is not None and size > 1:
        left, right = (rank - 1) % size, (rank + 1) % size
        if peer not in (left, right):
            move = f"send from rank {rank} to rank {peer}" if op == "send" else (
                f"recv on rank {rank} from rank {peer}")  # fmt: skip
            a, b = sorted((left, right))
            who = f"rank {a}" if a == b else f"rank {a} and rank {b}"
            raise BackendUnsupported(
                f"{move}: {where} moves messages only between neighbours "
                f"({who}). Pass it along the ring, or {_USE_MPI}."
            )
