"""The messages that cross between a rank and the kernel, as typed dicts.

They travel pickled (ipyparallel's ``apply``) or as JSON (the probe), so they
are plain dicts; these types say which keys each one has.  The rank side
builds them, the kernel side reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

__all__ = [
    "COST_PAYLOAD",
    "ORDER_PAYLOAD",
    "CostPayload",
    "EvalState",
    "OpLogState",
    "OpState",
    "OpTrace",
    "OrderPayload",
    "ProbeReply",
    "RankInfo",
    "Snapshot",
    "TraceReport",
    "WaitState",
    "in_call_order",
    "run_order_digest",
]


class RankInfo(TypedDict):
    """What a rank says about itself when the cluster starts (``prepare``)."""

    rank: int
    size: int
    pid: int
    host: str
    backend: str
    mpi_library: str
    mlx_version: str
    started: float
    probe: str  # "ip:port" where the rank's probe answers (see mxnb.protocol.probe)


class OpState(TypedDict):
    """One op of the running cell, as a hang report reads it."""

    seq: int  # counts the cell's ops on this rank, from 1
    op: str  # recv_like is logged as recv
    group: str  # the group's label
    group_ranks: tuple[int, ...]  # its members as world ranks
    peer: int | None  # world rank sent to or received from
    shape: tuple[int, ...]
    dtype: str
    site: str  # "cell In[4], line 2: y = ..."
    evaluated: bool
    check: str  # off | pending | ok | mismatch | abandoned
    stream: str  # "default stream", "cpu stream 2": ops on one stream run in turn


class WaitState(TypedDict):
    """The checked-mode exchange a rank is waiting in."""

    seq: int
    op: str
    #: whom it waits for, e.g. "rank 1 to send to this rank"
    waits_for: str
    since: float
    site: str


class EvalState(TypedDict):
    """The evaluation (``mx.eval``, ``print``, ...) a rank is blocked in."""

    entry: str
    site: str
    since: float
    ops: list[int]  # seqs of the ops it (may) need


class OpLogState(TypedDict):
    running_cell: bool
    checked: bool
    ops: list[OpState]
    waiting: WaitState | None
    in_eval: EvalState | None
    unchecked: list[int]


class ProbeReply(OpLogState):
    """A rank's answer to "where are you?", even while it is blocked in MPI."""

    rank: int
    pid: int
    line: str  # the main thread's current cell line


class Snapshot(TypedDict, total=False):
    """An array in at most 64 KiB (see :mod:`mxnb.protocol.snapshot`)."""

    shape: list[int]
    dtype: str
    nbytes: int
    digest: str
    stats: dict[str, Any]  # min, max, mean (finite values), nan, inf
    exact: bool
    enc: str  # f8 | i8 | u8 | c8 | q16
    dshape: list[int]
    factors: list[int]
    lo: float
    hi: float
    magnitude: bool
    data: bytes


class OpTrace(TypedDict, total=False):
    """One op on one rank, as the recorder reports it to the kernel."""

    seq: int
    op: str
    group: str
    group_rank: int
    group_size: int
    peer: int | None  # group rank of the peer
    stream: str | None  # point to point: "cpu stream 2", None for the default stream
    #: point to point: seqs of the other ops on this channel in the same evaluation
    unordered: list[int]
    site: dict[str, Any] | None  # file, line, code
    t: float  # seconds since the cell started
    call_s: float | None  # the Python call: building the lazy graph node (None: in mx.compile)
    eval_s: float | None
    eval_by: str | None
    eval_ops: int
    eval_arrays: int
    eval_note: str | None  # indirect | async | lazy | unknown
    #: which of the cell's evaluations on this rank ran it (1, 2, ...): the order
    #: the rank ran its ops in; None where that is not known
    eval_no: int | None
    #: completing mxnb's checks just before that evaluation (not in eval_s); None: unchecked
    check_s: float | None
    errors: dict[str, str]
    states: dict[str, str]  # side -> ok | lazy | in_flight | refused | compiled | vmapped | ...
    # "in"/"out" ({"shape", "dtype"}) and "before"/"after" (Snapshot) are keys too;
    # "in" is a Python keyword, so they are left out of the class syntax.


class TraceReport(TypedDict):
    """One rank's trace of the last finished cell (``collect``)."""

    rank: int
    size: int
    enabled: bool
    kept: bool  # values held for the trace (--viz), at the price of MLX's buffer reuse
    cell: bool
    ops: list[OpTrace]
    groups: dict[str, list[int]]  # label -> world ranks of each group this rank is in
    dropped: int
    host: str  # the rank's hostname


#: The ``source`` of the payload a rank adds to its reply to a cell (IPython's
#: payload manager) when it ran collectives out of their call order.
ORDER_PAYLOAD = "mxnb.run_order"


class OrderPayload(TypedDict):
    """Sent with a cell's reply, only by a rank that ran a group's collectives
    in another order than it called them: the kernel then compares the ranks'
    traces, as MPI would have paired different collectives if they differ."""

    source: str  # ORDER_PAYLOAD
    groups: dict[str, str]  # label -> run_order_digest of the group's collectives


COST_PAYLOAD = "mxnb.op_cost"


class CostPayload(TypedDict):
    """Sent with a cell's reply by a rank whose cell ran a loop of small ops
    that mxnb watched: a stopwatch around such a loop reads mxnb's own cost
    too, which the kernel says once (issue 18)."""

    source: str  # COST_PAYLOAD
    ops: int  # the cell's mx.distributed ops on this rank
    checked: bool  # each waited for mxnb's exchange between the ranks
    recorded: bool  # each was noted for the trace
    #: where: "c" (most by the rank's op path in C), "python" (its Python path,
    #: though the C path is built), "python-only" (the C path is not built here)
    path: str


def in_call_order(eval_nos: Iterable[int | None]) -> bool:
    """Whether a rank ran one group's collectives in their call order.

    ``eval_nos``: which of the cell's evaluations ran each collective, in call
    order (None: not known).  Ops run by one evaluation tie.  Ranks that all
    ran in call order cannot have paired different collectives, so this is the
    cheap test each rank makes on its own.
    """
    last = 0
    for e in eval_nos:
        if e is None:
            continue
        if e < last:
            return False
        last = e
    return True


def run_order_digest(eval_nos: Sequence[int | None]) -> str:
    """The order a rank ran one group's collectives in, as a short text to compare.

    Equal on two ranks when each ran the collectives in the same relative
    order (the same ties, the same unknowns), whatever its evaluations were
    numbered: ranks that all ran one order, even another than the calls',
    paired the right collectives, and the kernel need not look further.
    """
    dense = {e: k for k, e in enumerate(sorted({e for e in eval_nos if e is not None}))}
    said = ",".join("?" if e is None else str(dense[e]) for e in eval_nos)
    return hashlib.blake2b(said.encode(), digest_size=8).hexdigest()
