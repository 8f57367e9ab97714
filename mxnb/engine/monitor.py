"""What each rank is doing: its ops this cell, and where it waits.

An observer on :mod:`mxnb.engine.hooks` logs every op of the running cell,
posts the checked-mode exchange, and refuses ops that would abort the whole
MPI job.  MLX's evaluation entry points (``mx.eval``, ``print`` of an array,
``.item()``, ...) are wrapped so that the rank knows when it is inside an
evaluation and completes the checks of the arrays it evaluates first.  The
probe thread reads :func:`snapshot` while the main thread is blocked.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from mxnb.engine import check, comm, hooks

__all__ = [
    "Monitor",
    "add_eval_listener",
    "install",
    "monitor",
    "remove_eval_listener",
    "reset_checks",
    "set_bare",
    "set_checked",
]

#: Op records a rank keeps per cell for its hang report; a loop of millions of
#: ops keeps only the most recent ones (sequence numbers still count them all).
MAX_OPS = 2000
#: Not-yet-evaluated ops an evaluation lists as what it may need (most recent).
MAX_NEEDS = 64

#: ``fn(arrays, seconds, entry)``, called after each outermost evaluation.
EvalListener = Callable[[list[Any], float, str], None]
#: Empty unless someone listens (the trace recorder, while recording): an
#: evaluation then costs one truth test more, and no clock reads.
_eval_listeners: list[EvalListener] = []


@dataclass
class OpRecord:
    seq: int
    op: str
    mirror: comm.Mirror
    peer: int | None  # world rank of src/dst
    shape: tuple[int, ...]
    dtype: str
    where: hooks.CallSite | None  # rendered only when a report asks
    evaluated: bool = False
    check: str = "off"  # off | pending | ok | mismatch | abandoned

    @property
    def group(self) -> str:
        return self.mirror.describe()

    @property
    def group_ranks(self) -> tuple[int, ...]:
        return self.mirror.ranks

    @property
    def site(self) -> str:
        return self.where.describe() if self.where else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "op": self.op, "group": self.group,
            "group_ranks": self.group_ranks, "peer": self.peer, "shape": self.shape,
            "dtype": self.dtype, "site": self.site, "evaluated": self.evaluated,
            "check": self.check,
        }  # fmt: skip

    def describe(self) -> str:
        target = ""
        if self.op == "send":
            target = f" to rank {self.peer}"
        elif self.op == "recv":
            target = f" from rank {self.peer}"
        return f"{self.op} #{self.seq}{target} of {self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass
class Monitor:
    """Per-rank state; one instance per engine process."""

    checked: bool = True
    bare: bool = False  # see set_bare
    cell_ops: deque[OpRecord] = field(default_factory=lambda: deque(maxlen=MAX_OPS))
    # id(result) -> (seq, weak reference): results are never kept alive here,
    # and an entry leaves when its array dies, so an id is never mistaken.
    live: dict[int, tuple[int, weakref.ref[Any]]] = field(default_factory=dict)
    # seq -> record of ops not (yet) known to be evaluated, oldest first
    open_ops: OrderedDict[int, OpRecord] = field(default_factory=OrderedDict)
    pending: dict[int, tuple[check.PendingCheck, Any]] = field(default_factory=dict)
    waiting: dict[str, Any] | None = None
    in_eval: dict[str, Any] | None = None
    running_cell: bool = False
    group_seq: dict[str, int] = field(default_factory=dict)
    peer_seq: dict[tuple[str, str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- hooks observer ---------------------------------------------------

    def before(self, call: hooks.OpCall) -> None:
        __tracebackhide__ = True
        op = "recv" if call.op == "recv_like" else call.op
        mirror = comm.mirror_of(call.kwargs.get("group"))
        shape, dtype, peer = _describe_args(op, call)
        trap = check.bool_trap(op, dtype)
        if trap:
            raise check.CommMismatch(trap)
        rec = OpRecord(
            seq=call.seq,
            op=op,
            mirror=mirror,
            peer=None if peer is None else mirror.ranks[peer],
            shape=shape,
            dtype=dtype,
            where=call.site,
        )
        with self.lock:
            self.cell_ops.append(rec)
            self.open_ops[rec.seq] = rec
            if len(self.open_ops) > MAX_OPS:
                self.open_ops.popitem(last=False)
        if self.checked and op != "sum_scatter":
            if peer is None:
                n = self.group_seq[mirror.label] = self.group_seq.get(mirror.label, 0) + 1
            else:
                key = (mirror.label, op, peer)
                n = self.peer_seq[key] = self.peer_seq.get(key, 0) + 1
            meta = check.Meta(op, n, shape, dtype)
            call.extra["check"] = check.post(op, call.seq, meta, mirror, peer)
            rec.check = "pending"

    def after(self, call: hooks.OpCall) -> None:
        key, live = id(call.result), self.live

        def gone(ref: weakref.ref[Any]) -> None:
            if live.get(key, (0, None))[1] is ref:
                del live[key]

        try:
            live[key] = (call.seq, weakref.ref(call.result, gone))
        except TypeError:  # not an MLX array: nothing to follow
            pass
        pending = call.extra.get("check")
        if pending is not None:
            with self.lock:
                self.pending[id(call.result)] = (pending, call.result)

    # -- evaluation -------------------------------------------------------

    def before_eval(self, arrays: list[Any], entry: str) -> None:
        """Complete the checks of the arrays about to be evaluated."""
        __tracebackhide__ = True
        ids = {id(a) for a in arrays}
        for key in list(self.pending):
            pc, _ = self.pending[key]
            if key in ids:
                self._finish(key, pc, wait=True)
            elif check.done(pc):
                self._finish(key, pc, wait=False)
        direct = sorted(hit[0] for hit in map(self.live.get, ids) if hit is not None)
        for seq in direct:
            rec = self.open_ops.pop(seq, None)
            if rec is not None:
                rec.evaluated = True
        # Only a report reads this; it is worked out then (see _eval_state).
        self.in_eval = {
            "entry": entry,
            "frame": sys._getframe(2),
            "since": time.time(),
            "direct": direct,
        }

    def _finish(self, key: int, pc: check.PendingCheck, wait: bool) -> None:
        __tracebackhide__ = True
        rec = self._record(pc.seq)
        try:
            if wait:
                check.wait(pc, on_wait=self._set_waiting)
            else:
                check.verify(pc)
        except check.CommMismatch:
            if rec:
                rec.check = "mismatch"
            self.pending.pop(key, None)
            raise
        except check.CommInterrupted:
            if rec:
                rec.check = "abandoned"
            raise
        finally:
            self.waiting = None
        if rec:
            rec.check = "ok"
        self.pending.pop(key, None)

    def _set_waiting(self, pc: check.PendingCheck) -> None:
        self.waiting = {
            "seq": pc.seq,
            "op": pc.op,
            "for": pc.describe(),
            "since": time.time(),
            "site": _site(),
        }

    def _record(self, seq: int) -> OpRecord | None:
        for rec in reversed(self.cell_ops):
            if rec.seq == seq:
                return rec
        return None

    # -- cells ----------------------------------------------------------------

    def pre_cell(self, *_: Any) -> None:
        with self.lock:
            self.cell_ops = deque(maxlen=MAX_OPS)
            self.live = {}
            self.open_ops = OrderedDict()
        hooks.reset_seq()
        self.running_cell = True

    def post_cell(self, *_: Any) -> None:
        self.running_cell = False
        self.in_eval = None
        self.waiting = None

    def _eval_state(self) -> dict[str, Any] | None:
        """The running evaluation as a report reads it, worked out on demand.

        The main thread is blocked inside that evaluation, so the ops still
        open now are the ones it was called with.
        """
        ev = self.in_eval
        if ev is None:
            return None
        site = hooks.call_site(frame=ev["frame"])
        # Evaluating something else may still run ops this cell left unevaluated.
        needs = ev["direct"] or list(islice(reversed(self.open_ops), MAX_NEEDS))[::-1]
        return {
            "entry": ENTRY_NAMES.get(ev["entry"], ev["entry"]),
            "site": site.describe() if site else "",
            "since": ev["since"],
            "ops": needs,
        }

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            ops = [r.as_dict() for r in self.cell_ops]
            in_eval = self._eval_state()
        return {
            "running_cell": self.running_cell,
            "checked": self.checked,
            "ops": ops,
            "waiting": self.waiting,
            "in_eval": in_eval,
            "unchecked": sorted(pc.seq for pc, _ in self.pending.values()),
        }


def _describe_args(op: str, call: hooks.OpCall) -> tuple[tuple[int, ...], str, int | None]:
    if call.op == "recv":
        shape, dtype = tuple(call.arg(0, "shape")), check.dtype_name(call.arg(1, "dtype"))
    else:
        x = call.x
        shape, dtype = tuple(x.shape), check.dtype_name(x.dtype)
    peer = call.peer
    if peer is None and op in ("send", "recv"):
        raise TypeError(f"{call.op}() needs a {'dst' if op == 'send' else 'src'} rank")
    return shape, dtype, peer


def _site() -> str:
    site = hooks.call_site(depth=3)
    return site.describe() if site else ""


monitor = Monitor()

# -- evaluation entry points ----------------------------------------------

#: How an evaluation entry point reads in a report.
ENTRY_NAMES = {
    "__repr__": "print/repr of an array",
    "__str__": "print of an array",
    "__format__": "formatting an array",
    "__float__": "float() of an array",
    "__int__": "int() of an array",
    "__bool__": "a truth test of an array",
    "__index__": "using an array as an index",
    "__complex__": "complex() of an array",
    "__array__": "conversion to NumPy",
    "__iter__": "iterating over an array",
    "__bytes__": "bytes() of an array",
    "item": ".item()",
    "tolist": ".tolist()",
}

_ARRAY_ENTRIES = (
    "item", "tolist", "__repr__", "__str__", "__format__", "__float__", "__int__",
    "__bool__", "__index__", "__complex__", "__array__", "__iter__", "__bytes__",
)  # fmt: skip


def _flatten(tree: Any, out: list[Any]) -> list[Any]:
    if isinstance(tree, (list, tuple)):
        for t in tree:
            _flatten(t, out)
    elif isinstance(tree, dict):
        for t in tree.values():
            _flatten(t, out)
    else:
        out.append(tree)
    return out


def add_eval_listener(fn: EvalListener) -> None:
    """Call ``fn(arrays, seconds, entry)`` after each outermost evaluation returns.

    ``arrays`` are the arrays the entry point was given, ``seconds`` the wall
    time of the real evaluation alone (checks completed before it are not
    counted): since MLX is lazy, that is where communication really happens.
    """
    if fn not in _eval_listeners:
        _eval_listeners.append(fn)


def remove_eval_listener(fn: EvalListener) -> None:
    if fn in _eval_listeners:
        _eval_listeners.remove(fn)


def _entry(name: str, real: Callable[..., Any], arrays_of: Callable[..., list[Any]]) -> Any:
    @functools.wraps(real)
    def entry(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if monitor.in_eval is not None or monitor.bare:  # nested, e.g. print -> tolist
            return real(*args, **kwargs)
        arrays = arrays_of(*args, **kwargs)
        monitor.before_eval(arrays, name)
        try:
            if not _eval_listeners:
                return real(*args, **kwargs)
            t0 = time.perf_counter()
            out = real(*args, **kwargs)
            seconds = time.perf_counter() - t0
            for fn in list(_eval_listeners):
                fn(arrays, seconds, name)
            return out
        finally:
            monitor.in_eval = None

    entry.__mxnb_original__ = real  # type: ignore[attr-defined]
    return entry


def install(world_group: Any) -> None:
    """Observe ops and evaluation on this rank; idempotent."""
    import mlx.core as mx

    comm.install_split_hook(world_group)
    hooks.install()
    if not monitor.bare:
        hooks.add_observer(monitor, first=True)
    if getattr(mx.eval, "__mxnb_original__", None) is None:
        mx.eval = _entry("mx.eval", mx.eval, lambda *a, **k: _flatten(a, []))
        mx.async_eval = _entry("mx.async_eval", mx.async_eval, lambda *a, **k: _flatten(a, []))
        for name in _ARRAY_ENTRIES:
            real = getattr(mx.array, name, None)
            if real is not None:
                setattr(mx.array, name, _entry(name, real, lambda self, *a, **k: [self]))


def set_checked(on: bool) -> None:
    monitor.checked = on


def set_bare(on: bool) -> None:
    """Plain MLX speed: no op log, no checks, evaluation not observed.

    What is given up is the hang diagnosis: a rank that waits forever is then
    ended only by the cell's timeout or the stop button, whose report says on
    which line each rank was but not which op it waits for, or why.
    """
    monitor.bare = on
    if on:
        hooks.remove_observer(monitor)
    else:
        hooks.add_observer(monitor, first=True)


def reset_checks() -> None:
    """After an abandoned wait: drop pending exchanges, fresh communicators."""
    for pc, _ in list(monitor.pending.values()):
        check.abandon(pc)
    monitor.pending.clear()
    monitor.group_seq.clear()
    monitor.peer_seq.clear()
    comm.reset()
