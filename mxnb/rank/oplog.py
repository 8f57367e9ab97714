"""What each rank is doing: its ops this cell, and where it waits.

As the logger of :mod:`mxnb.rank.hooks` it logs every op of the running
cell, posts the checked-mode exchange, refuses ops that would abort the
whole MPI job, and hands each op's record to the trace recorder while one
records (:mod:`mxnb.rank.recorder`).  Through :mod:`mxnb.rank.entries` the
rank knows when it is inside an evaluation, completes the checks of the
arrays it evaluates first, and has the recorder time the evaluation.
The probe thread reads :meth:`OpLog.state` while the main thread is blocked.
What mxnb's op path in C took comes in by :meth:`OpLog.sync` (:mod:`mxnb.rank.fastpath`).
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mxnb.errors import CommInterrupted, CommMismatch
from mxnb.protocol.messages import OpLogState, WaitState
from mxnb.protocol.ops import COLLECTIVES, encode
from mxnb.rank import backend, check, entries, graph, hooks
from mxnb.rank.compiled import CompileHook, Template
from mxnb.rank.groups import Groups
from mxnb.rank.oprecord import OpRecord
from mxnb.rank.pairing import Pairing, stream_name
from mxnb.rank.vmapped import VmapHook

if TYPE_CHECKING:
    from mxnb.rank.fastpath import FastPath
    from mxnb.rank.recorder import Recorder

__all__ = ["OpLog", "OpRecord"]

#: Op records a rank keeps per cell for its hang report; a loop of millions of
#: ops keeps only the most recent ones (sequence numbers still count them all).
MAX_OPS = 2000
#: Size of the result map at which entries of dead results are swept out.
LIVE_SWEEP = 2 * MAX_OPS


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
    # id(result) -> (record, weak reference) of collectives whose check is open.  The C
    # path reads it and group_seq on every call (mxnb.rank.fastpath): cleared, never replaced
    pending: dict[int, tuple[OpRecord, weakref.ref[Any]]] = field(default_factory=dict)
    pairing: Pairing = field(default_factory=Pairing)
    waiting: WaitState | None = None
    # (entry, caller frame, since) of the running evaluation, whose records are
    # ``given``: the report is worked out only when a probe asks (see entries.eval_state)
    in_eval: tuple[str, Any, float] | None = None
    #: records of the arrays the running (or last) evaluation was handed, and of
    #: the compiled ops it runs (mxnb.rank.compiled): the ops it is timed for
    given: list[OpRecord] = field(default_factory=list)
    #: records of other ops it runs, found in MLX's graph (not timed: a report's)
    unhanded: list[OpRecord] = field(default_factory=list)
    running_cell: bool = False
    group_seq: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the trace recorder while it records, else None
    recorder: Recorder | None = None
    #: MLX's array type, which an op's input is in the common case, and its group type
    array: type = field(default_factory=lambda: _mlx_types()[0])
    group_type: type = field(default_factory=lambda: _mlx_types()[1])
    #: who mx.compile is tracing, and the templates of compiled ops (see mxnb.rank.compiled)
    compile: CompileHook = field(default_factory=CompileHook)
    #: the batch sizes of the mx.vmap traces running now (see mxnb.rank.vmapped)
    vmap: VmapHook = field(default_factory=VmapHook)
    #: the op path in C, whose notes :meth:`sync` turns into records (mxnb.rank.fastpath)
    fast: FastPath | None = None

    def sync(self, *_: Any) -> None:
        """Bring in the ops and evaluations the C path noted since the last look."""
        if self.fast is not None:
            self.fast.sync()

    # -- hooks logger -----------------------------------------------------

    def log(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], seq: int,
        site: hooks.RawSite,
    ) -> OpRecord | None:  # fmt: skip
        # Runs for every op; a probe reads cell_ops from another thread, but a
        # deque append is atomic and the probe copies the deque in one step.
        __tracebackhide__ = True
        self.sync()  # the C path's ops came first
        op = "recv" if name == "recv_like" else name
        group = kwargs.get("group") if kwargs else None
        if group is not None and type(group) is not self.group_type:
            return None  # not an MLX group: MLX refuses the call in its own words
        mirror = self.groups.of(group)
        if args and op in COLLECTIVES and type(args[0]) is self.array:  # all_sum(x), inline
            x = args[0]
            shape, dtype, peer = tuple(x.shape), check.dtype_name(x.dtype), None
        else:
            described = hooks.describe_args(name, args, kwargs)
            if described is None:  # an input MLX refuses, in its own words
                return None
            x, shape, dtype, peer = described
            if peer is not None and not 0 <= peer < len(mirror.ranks):
                return None  # not a rank of the group: MLX refuses the call, too
        batch = tuple(self.vmap.sizes) if self.vmap.sizes and op != "recv" else ()
        if batch:  # MLX runs it batched (mxnb.rank.vmapped)
            shape = (*batch, *shape)
        backend.screen(op, dtype, self.groups.rank, None if peer is None else mirror.ranks[peer],
                       len(mirror.ranks))  # fmt: skip
        rec = OpRecord(
            seq, op, mirror, None if peer is None else mirror.ranks[peer], shape, dtype, site, name
        )
        if kwargs and kwargs.get("stream") is not None:
            rec.stream = stream_name(kwargs["stream"])
        if batch:
            rec.batch = batch
        if self.compile.stack:  # traced: checked and recorded where its graph runs
            rec.in_trace, rec.mlx_group = True, group  # (mxnb.rank.compiled)
            return rec
        self.cell_ops.append(rec)
        if self.checked and op != "sum_scatter":
            rec.check = "pending"
            if peer is None:  # a collective: every member calls it, in order
                self._post(rec)
            # point to point: posted when evaluated (see mxnb.rank.pairing)
        if self.recorder is not None:
            self.recorder.before(rec, x)
        return rec

    def logged(self, rec: OpRecord | None, result: Any) -> None:
        if rec is None:  # not logged (see log): nothing to follow
            return
        if rec.in_trace:
            self._traced(rec, result)
            return
        try:
            ref = weakref.ref(result)  # one per op: the log, its check and the trace share it
        except TypeError:  # not an MLX array: nothing to follow
            ref = None
        recorder = self.recorder
        if recorder is not None and rec.t:  # the recorder noted its call
            try:
                recorder.after(rec, result, ref)
            except Exception:  # recording must never break the user's op: count it
                recorder.dropped += 1
        if ref is None:
            return
        self.follow(rec, ref, id(result))
        if rec.posted is None and rec.peer is not None and rec.check == "pending":
            self.pairing.follow(rec, result)

    def follow(self, rec: OpRecord, ref: weakref.ref[Any], key: int) -> None:
        """Follow an op's result (``key``: its id) until evaluated, and its open check."""
        live = self.live
        live[key] = (rec, ref)
        if len(live) > self.live_limit:
            self._sweep()
        if rec.posted is not None:
            # a weak reference: MLX may reuse the result's buffer.  No lock: the
            # probe copies the dict in one C-level step (see state)
            self.pending[key] = (rec, ref)

    def _traced(self, rec: OpRecord, result: Any) -> None:
        """An op inside a compiled function's trace: a template for its replays."""
        shape = getattr(result, "shape", None)
        rec.out = None if shape is None else (*rec.batch, *shape)
        if rec.op in graph.LABELS:
            prim = graph.own_primitive(result)
            if prim is not None:
                self.compile.add(prim, Template(rec, rec.mlx_group))

    def failed(self, rec: OpRecord | None) -> None:
        """MLX refused the call: no op exists, so a report must not list one,
        and the trace lets go of what it held for it."""
        if rec is None:
            return
        with self.lock:  # the probe copies cell_ops under it
            try:
                self.cell_ops.remove(rec)
            except ValueError:  # already pushed out of the bounded log
                pass
        if self.recorder is not None:
            self.recorder.forget(rec)

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
        handed: dict[int, Any] = {}  # an array handed twice (mx.eval(z, w, z)) counts once
        for a in arrays:
            hit = live.get(id(a))
            if hit is not None and hit[1]() is a and id(a) not in handed:
                handed[id(a)] = a
                hit[0].evaluated = True
                direct.append(hit[0])
        self.given, self.unhanded = direct, []
        waits = []  # checks to wait for, oldest op first: (seq, key in pending, record)
        # one reading of MLX's graph, written only if a part below looks (none in a plain loop)
        reading = graph.Reading(arrays)
        p2p = self.pairing.running(direct, reading) if self.pairing.open else []
        if self.compile.live and (self.checked or self.recorder is not None):
            replays = self.compile.replays(reading, self.groups.of, self._next_seq)
            self.cell_ops.extend(replays)
            if self.recorder is not None:
                for rec in replays:
                    self.recorder.replayed(rec)
            direct += replays  # timed by this evaluation; a report lists them
            for rec in replays if self.checked else ():
                if rec.peer is not None:
                    p2p.append(rec)
                    continue
                rec.check = "pending"
                self._post(rec)
                self.pending[-id(rec)] = (rec, _NO_RESULT)  # no array: keyed by the record
                waits.append((rec.seq, -id(rec), rec))
        if p2p:
            try:
                self.pairing.check(p2p, self._set_waiting)
            finally:
                self.waiting = None
        pending = self.pending
        if pending:
            for key, a in handed.items():  # the op results given, each once
                hit = pending.get(key)
                if hit is not None and hit[1]() is a:
                    waits.append((hit[0].seq, key, hit[0]))
            for _, key, rec in sorted(waits) if len(waits) > 1 else waits:
                self._finish(key, rec, wait=True)
            for key, (rec, _) in list(pending.items()):  # others: verify what has landed
                if rec.posted is not None and check.done(rec.posted):
                    self._finish(key, rec, wait=False)
            if pending:  # still open: does this evaluation run them, unhanded? (all_sum(x) / n)
                open_ = [(key, rec, ref()) for key, (rec, ref) in pending.items()]
                hits = graph.inside(reading, [(rec.op, out) for _, rec, out in open_])
                for key, rec, _ in sorted((open_[i] for i in hits), key=lambda o: o[1].seq):
                    rec.evaluated = True  # run by this evaluation, inside an expression
                    self.unhanded.append(rec)
                    self._finish(key, rec, wait=True)
        if self.recorder is not None:  # before MLX runs: which ops it can run
            self.recorder.timer.before(arrays, direct, reading)
        # Only a report reads this; it is worked out then (see entries.eval_state).
        self.in_eval = (entry, sys._getframe(2), time.time())

    @property
    def timed(self) -> bool:
        """Whether evaluations are timed: while the trace records."""
        return self.recorder is not None

    def after_eval(
        self, arrays: Sequence[Any], seconds: float | None, entry: str, check_s: float | None
    ) -> None:
        """Time the recorded ops of the arrays just evaluated (see EvalWatcher)."""
        recorder = self.recorder
        if recorder is not None:
            n = len(arrays) if len(arrays) < 2 else len({id(a) for a in arrays})
            recorder.timer.on_eval(self.given, n, seconds, entry, check_s)

    def _post(self, rec: OpRecord) -> None:
        """Post a collective's exchange, numbered by its place among its group's checks."""
        label = rec.mirror.label
        n = self.group_seq[label] = self.group_seq.get(label, 0) + 1
        rec.posted = check.post(rec.op, rec.seq, encode(rec.op, n, rec.shape, rec.dtype),
                                rec.mirror, None)  # fmt: skip

    def _next_seq(self) -> int:
        self.wrapped.seq += 1
        return self.wrapped.seq

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
        with self.lock:  # the C path's notes came in first (Runtime.attach)
            self.cell_ops = deque(maxlen=MAX_OPS)
            self.live = {}
            self.live_limit = LIVE_SWEEP
            self.given, self.unhanded = [], []
        self.wrapped.reset_seq()
        self.running_cell = True

    def post_cell(self, *_: Any) -> None:
        self.pairing.end_cell()
        self.running_cell = False
        self.in_eval = None
        self.waiting = None

    def state(self) -> OpLogState:
        """This cell's ops and where the rank waits, as a probe reply carries them."""
        self.sync()  # before the lock: bringing notes in may take it
        with self.lock:
            ops = list(self.cell_ops)  # one step: the main thread may be appending
            in_eval = entries.eval_state(self.in_eval, self.given + self.unhanded, ops)
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
        self.sync()
        self.checked = on
        self.pairing.forget()
        if self.fast is not None:
            self.fast.update()

    def set_bare(self, on: bool) -> None:
        """Plain MLX speed: no op log, no checks, evaluation not observed.

        What is given up is the hang diagnosis: a rank that waits forever is then
        ended only by the cell's timeout or the stop button, whose report says on
        which line each rank was but not which op it waits for, or why.
        """
        self.sync()
        self.bare = on
        self.wrapped.set_logger(None if on else self)
        self.compile.observed = not on

    def reset_checks(self) -> list[tuple[int, int]]:
        """After an abandoned wait: drop pending exchanges, fresh communicators.

        Returns the orphaned messages discarded (see :func:`check.drain_world`).
        """
        self.sync()
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
        if self.fast is not None:
            self.fast.update()  # the new world communicator
        return check.drain_world()


def _no_result() -> None:
    """Stands for the weak reference of a compiled op's result, which Python never sees."""
    return None


_NO_RESULT: Any = _no_result


def _mlx_types() -> tuple[type, type]:
    import mlx.core as mx

    return mx.array, mx.distributed.Group


def _site() -> str:
    site = hooks.call_site(depth=3)
    return site.describe() if site else ""
