"""What each rank is doing: its ops this cell, and where it waits.

As the logger of :mod:`mxnb.rank.hooks` it logs every op of the running
cell, posts the checked-mode exchange, and refuses ops that would abort the
whole MPI job.  Through :mod:`mxnb.rank.entries` the rank knows when it is
inside an evaluation, and completes the checks of the arrays it evaluates
first.
The probe thread reads :meth:`OpLog.state` while the main thread is blocked.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mxnb.errors import CommInterrupted, CommMismatch
from mxnb.protocol.messages import EvalState, OpLogState, OpState, WaitState
from mxnb.protocol.ops import COLLECTIVES, Meta
from mxnb.protocol.wording import op_text
from mxnb.rank import backend, check, entries, hooks
from mxnb.rank.groups import GroupInfo, Groups
from mxnb.rank.pairing import Pairing, stream_name

__all__ = ["OpLog", "OpRecord"]

#: Op records a rank keeps per cell for its hang report; a loop of millions of
#: ops keeps only the most recent ones (sequence numbers still count them all).
MAX_OPS = 2000
#: Not-yet-evaluated ops an evaluation lists as what it may need (most recent).
MAX_NEEDS = 64
#: Size of the result map at which entries of dead results are swept out.
LIVE_SWEEP = 2 * MAX_OPS


@dataclass(slots=True)
class OpRecord:
    seq: int
    op: str
    mirror: GroupInfo
    peer: int | None  # world rank of src/dst
    shape: tuple[int, ...]
    dtype: str
    where: hooks.RawSite | None  # resolved and rendered only when a report asks
    stream: str | None = None  # None: the default stream (see stream_name)
    prim: int | None = None  # point to point: the address of its MLX primitive
    evaluated: bool = False
    check: str = "off"  # off | pending | ok | mismatch | abandoned | refused
    # the posted check, from the op's call until its result is known
    posted: check.PendingCheck | None = None

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


@dataclass
class OpLog:
    """What this rank's ops are doing; the rank's one instance lives in its runtime."""

    wrapped: hooks.Hooks
    groups: Groups
    checked: bool = True
    bare: bool = False  # see set_bare
    cell_ops: deque[OpRecord] = field(default_factory=lambda: deque(maxlen=MAX_OPS))
    # id(result) -> (record, weak reference): results are never kept alive
    # here, and a hit counts only if the reference still gives that very
    # array, so a reused id is never mistaken.  Dead entries are swept out in
    # bulk (see _sweep) rather than by a callback per result.
    live: dict[int, tuple[OpRecord, weakref.ref[Any]]] = field(default_factory=dict)
    live_limit: int = LIVE_SWEEP
    # id(result) -> (record, weak reference) of collectives whose check is open
    pending: dict[int, tuple[OpRecord, weakref.ref[Any]]] = field(default_factory=dict)
    pairing: Pairing = field(default_factory=Pairing)
    waiting: WaitState | None = None
    # (entry, caller frame, since, records it evaluates): the report is
    # worked out from this only when a probe asks (see _eval_state)
    in_eval: tuple[str, Any, float, list[OpRecord]] | None = None
    running_cell: bool = False
    group_seq: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- hooks logger -----------------------------------------------------

    def log(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], seq: int,
        site: hooks.RawSite,
    ) -> OpRecord:  # fmt: skip
        # Runs for every op; a probe reads cell_ops from another thread, but a
        # deque append is atomic and the probe copies the deque in one step.
        __tracebackhide__ = True
        op = "recv" if name == "recv_like" else name
        mirror = self.groups.of(kwargs.get("group") if kwargs else None)
        if args and op in COLLECTIVES:  # the common case, all_sum(x, ...), inline
            x = args[0]
            shape, dtype, peer = tuple(x.shape), check.dtype_name(x.dtype), None
        else:
            shape, dtype, peer = _describe_args(name, args, kwargs)
        backend.screen(op, dtype, self.groups.rank, None if peer is None else mirror.ranks[peer],
                       len(mirror.ranks))  # fmt: skip
        rec = OpRecord(
            seq, op, mirror, None if peer is None else mirror.ranks[peer], shape, dtype, site
        )
        if kwargs and kwargs.get("stream") is not None:
            rec.stream = stream_name(kwargs["stream"])
        self.cell_ops.append(rec)
        if self.checked and op != "sum_scatter":
            rec.check = "pending"
            if peer is None:  # a collective: every member calls it, in order
                n = self.group_seq[mirror.label] = self.group_seq.get(mirror.label, 0) + 1
                rec.posted = check.post(op, seq, Meta(op, n, shape, dtype), mirror, None)
            # point to point: posted when evaluated (see mxnb.rank.pairing)
        return rec

    def logged(self, rec: OpRecord, result: Any) -> None:
        live = self.live
        try:
            live[id(result)] = (rec, weakref.ref(result))
        except TypeError:  # not an MLX array: nothing to follow
            pass
        if len(live) > self.live_limit:
            self._sweep()
        if rec.posted is not None:
            with self.lock:  # a weak reference: MLX may reuse the result's buffer
                self.pending[id(result)] = (rec, weakref.ref(result))
        elif rec.peer is not None and rec.check == "pending":
            self.pairing.follow(rec, result)

    def _sweep(self) -> None:
        """Forget results that died; the limit grows if the cell keeps many alive."""
        live = self.live
        for key in [k for k, (_, ref) in live.items() if ref() is None]:
            del live[key]
        self.live_limit = max(LIVE_SWEEP, 2 * len(live))

    # -- evaluation -------------------------------------------------------

    def before_eval(self, arrays: Sequence[Any], entry: str) -> None:
        """Complete the checks of the arrays about to be evaluated."""
        __tracebackhide__ = True
        direct = []
        live = self.live
        for a in arrays:
            hit = live.get(id(a))
            if hit is not None and hit[1]() is a:
                hit[0].evaluated = True
                direct.append(hit[0])
        if self.pairing.open:
            p2p = self.pairing.running(direct, arrays)
            if p2p:
                try:
                    self.pairing.check(p2p, self._set_waiting)
                finally:
                    self.waiting = None
        if self.pending:
            given = {id(a): a for a in arrays}
            for key in list(self.pending):
                rec, ref = self.pending[key]
                a = given.get(key)
                if a is not None and a is ref():
                    self._finish(key, rec, wait=True)
                elif rec.posted is not None and check.done(rec.posted):
                    self._finish(key, rec, wait=False)
        # Only a report reads this; it is worked out then (see _eval_state).
        self.in_eval = (entry, sys._getframe(2), time.time(), direct)

    def _finish(self, key: int, rec: OpRecord, wait: bool) -> None:
        __tracebackhide__ = True
        pc = rec.posted
        assert pc is not None, "only checked ops are pending"
        try:
            if wait:
                check.wait(pc, on_wait=self._set_waiting)
            else:
                check.verify(pc)
        except CommMismatch:
            rec.check = "mismatch"
            self.pending.pop(key, None)
            raise
        except CommInterrupted:
            rec.check = "abandoned"
            raise
        finally:
            self.waiting = None
        rec.check = "ok"
        rec.posted = None  # its buffers and requests are done with
        self.pending.pop(key, None)

    def _set_waiting(self, pc: check.PendingCheck) -> None:
        self.waiting = {
            "seq": pc.seq,
            "op": pc.op,
            "waits_for": pc.describe(),
            "since": time.time(),
            "site": _site(),
        }

    # -- cells ----------------------------------------------------------------

    def pre_cell(self, *_: Any) -> None:
        with self.lock:
            self.cell_ops = deque(maxlen=MAX_OPS)
            self.live = {}
            self.live_limit = LIVE_SWEEP
        self.wrapped.reset_seq()
        self.running_cell = True

    def post_cell(self, *_: Any) -> None:
        self.pairing.end_cell()
        self.running_cell = False
        self.in_eval = None
        self.waiting = None

    def _eval_state(self, ops: list[OpRecord]) -> EvalState | None:
        """The running evaluation as a report reads it, worked out on demand.

        The main thread is blocked inside that evaluation.  Without one of
        this cell's results among its arrays, it may still be running any op
        the cell left unevaluated: the most recent of those are listed.
        """
        ev = self.in_eval
        if ev is None:
            return None
        entry, frame, since, direct = ev
        site = hooks.call_site(frame=frame)
        if direct:
            needs = sorted(r.seq for r in direct)
        else:
            needs = [r.seq for r in reversed(ops) if not r.evaluated][:MAX_NEEDS][::-1]
        return {
            "entry": entries.ENTRY_NAMES.get(entry, entry),
            "site": site.describe() if site else "",
            "since": since,
            "ops": needs,
        }

    def state(self) -> OpLogState:
        """This cell's ops and where the rank waits, as a probe reply carries them."""
        with self.lock:
            ops = list(self.cell_ops)  # one step: the main thread may be appending
            in_eval = self._eval_state(ops)
        return {
            "running_cell": self.running_cell,
            "checked": self.checked,
            "ops": [r.as_dict() for r in ops],
            "waiting": self.waiting,
            "in_eval": in_eval,
            "unchecked": sorted(rec.seq for rec, _ in list(self.pending.values())),
        }

    # -- modes ----------------------------------------------------------------

    def set_checked(self, on: bool) -> None:
        """Checked communication on or off; ops followed so far are let go."""
        self.checked = on
        self.pairing.forget()

    def set_bare(self, on: bool) -> None:
        """Plain MLX speed: no op log, no checks, evaluation not observed.

        What is given up is the hang diagnosis: a rank that waits forever is then
        ended only by the cell's timeout or the stop button, whose report says on
        which line each rank was but not which op it waits for, or why.
        """
        self.bare = on
        self.wrapped.set_logger(None if on else self)

    def reset_checks(self) -> list[tuple[int, int]]:
        """After an abandoned wait: drop pending exchanges, fresh communicators.

        Returns the orphaned messages discarded (see :func:`check.drain_world`).
        """
        for rec, _ in list(self.pending.values()):
            if rec.posted is not None:
                check.abandon(rec.posted)
        for rec in list(self.cell_ops):
            if rec.posted is not None and rec.peer is not None:
                check.abandon(rec.posted)
                rec.posted = None
        self.pending.clear()
        self.group_seq.clear()
        self.pairing.reset()
        self.groups.reset()
        return check.drain_world()


def _describe_args(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[int, ...], str, int | None]:
    call = hooks.OpCall(name, args, kwargs, 0)
    if name == "recv":
        shape, dtype = tuple(call.arg(0, "shape")), check.dtype_name(call.arg(1, "dtype"))
    else:
        x = call.x
        shape, dtype = tuple(x.shape), check.dtype_name(x.dtype)
    peer = call.peer
    if peer is None and name in ("send", "recv", "recv_like"):
        needs = "dst" if name == "send" else "src"
        raise TypeError(f"{name}() needs a {needs} rank")
    return shape, dtype, peer


def _site() -> str:
    site = hooks.call_site(depth=3)
    return site.describe() if site else ""
