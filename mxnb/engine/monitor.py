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
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mxnb.engine import check, comm, hooks

__all__ = ["Monitor", "install", "monitor", "reset_checks", "set_checked"]


@dataclass
class OpRecord:
    seq: int
    op: str
    group: str
    group_ranks: tuple[int, ...]
    peer: int | None  # world rank of src/dst
    shape: tuple[int, ...]
    dtype: str
    site: str
    evaluated: bool = False
    check: str = "off"  # off | pending | ok | mismatch | abandoned

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
    cell_ops: list[OpRecord] = field(default_factory=list)
    outputs: dict[int, Any] = field(default_factory=dict)
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
            group=mirror.describe(),
            group_ranks=mirror.ranks,
            peer=None if peer is None else mirror.ranks[peer],
            shape=shape,
            dtype=dtype,
            site=call.site.describe() if call.site else "",
        )
        with self.lock:
            self.cell_ops.append(rec)
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
        # kept until the next cell, so ids stay unique while they are compared
        self.outputs[call.seq] = call.result
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
        direct = [r.seq for r in self.cell_ops if id(self.outputs.get(r.seq)) in ids]
        # Evaluating something else may still run ops this cell left unevaluated.
        needs = direct or [r.seq for r in self.cell_ops if not r.evaluated]
        for rec in self.cell_ops:
            if rec.seq in direct:
                rec.evaluated = True
        self.in_eval = {
            "entry": ENTRY_NAMES.get(entry, entry),
            "site": _site(),
            "since": time.time(),
            "ops": needs,
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
            self.cell_ops = []
            self.outputs = {}
        hooks.reset_seq()
        self.running_cell = True

    def post_cell(self, *_: Any) -> None:
        self.running_cell = False
        self.in_eval = None
        self.waiting = None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            ops = [asdict(r) for r in self.cell_ops]
        return {
            "running_cell": self.running_cell,
            "checked": self.checked,
            "ops": ops,
            "waiting": self.waiting,
            "in_eval": self.in_eval,
            "unchecked": sorted(pc.seq for pc, _ in self.pending.values()),
        }


def _describe_args(op: str, call: hooks.OpCall) -> tuple[tuple[int, ...], str, int | None]:
    a, kw = call.args, call.kwargs
    if op == "recv" and call.op == "recv":
        shape = tuple(a[0] if a else kw["shape"])
        dtype = check.dtype_name(a[1] if len(a) > 1 else kw["dtype"])
        peer = a[2] if len(a) > 2 else kw["src"]
        return shape, dtype, int(peer)
    x = a[0] if a else kw.get("x")
    shape, dtype = tuple(x.shape), check.dtype_name(x.dtype)
    if op == "send":
        return shape, dtype, int(a[1] if len(a) > 1 else kw["dst"])
    if op == "recv":  # recv_like(x, src)
        return shape, dtype, int(a[1] if len(a) > 1 else kw["src"])
    return shape, dtype, None


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


def _entry(name: str, real: Callable[..., Any], arrays_of: Callable[..., list[Any]]) -> Any:
    @functools.wraps(real)
    def entry(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if monitor.in_eval is not None:  # nested, e.g. print -> __repr__ -> tolist
            return real(*args, **kwargs)
        monitor.before_eval(arrays_of(*args, **kwargs), name)
        try:
            return real(*args, **kwargs)
        finally:
            monitor.in_eval = None

    entry.__mxnb_original__ = real  # type: ignore[attr-defined]
    return entry


def install(world_group: Any) -> None:
    """Observe ops and evaluation on this rank; idempotent."""
    import mlx.core as mx

    comm.install_split_hook(world_group)
    hooks.install()
    hooks.add_observer(monitor)
    if getattr(mx.eval, "__mxnb_original__", None) is None:
        mx.eval = _entry("mx.eval", mx.eval, lambda *a, **k: _flatten(a, []))
        mx.async_eval = _entry("mx.async_eval", mx.async_eval, lambda *a, **k: _flatten(a, []))
        for name in _ARRAY_ENTRIES:
            real = getattr(mx.array, name, None)
            if real is not None:
                setattr(mx.array, name, _entry(name, real, lambda self, *a, **k: [self]))


def set_checked(on: bool) -> None:
    monitor.checked = on


def reset_checks() -> None:
    """After an abandoned wait: drop pending exchanges, fresh communicators."""
    for pc, _ in list(monitor.pending.values()):
        check.abandon(pc)
    monitor.pending.clear()
    monitor.group_seq.clear()
    monitor.peer_seq.clear()
    comm.reset()
