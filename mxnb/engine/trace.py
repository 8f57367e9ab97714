"""The recorder: what every ``mx.distributed`` op of a cell saw on this rank.

It is an observer on :mod:`mxnb.engine.hooks`.  At call time it records only
metadata (op, group, peer, shapes, dtypes, cell line, time) and keeps a
*handle* (``copy.copy``: the same lazy graph node, no copy of data and no
evaluation) to the op's input and output.  It never evaluates anything.

Timing.  The call of an op only builds a graph node (``call_s``); its data
moves when the result is evaluated.  While recording, an
:class:`~mxnb.engine.evaltime.EvalTimer` listens to the rank's evaluations and
gives each op ``eval_s``, the wall time of the evaluation that ran it, or
says why it has none (see :mod:`mxnb.engine.evaltime`).

The laziness rule, applied when the cell ends:

* a kept array whose evaluation MLX has already done (or scheduled) is a leaf
  of the graph (``mx.export_to_dot`` shows no primitive): its value is read;
* anything else was never evaluated by the user's code, and is reported as
  such.  Evaluating it here could run a ``send``/``recv`` or a collective the
  program never ran (an op's *input* may itself depend on earlier
  communication), so mxnb never does.

Reading happens in a helper thread with a deadline: an array passed to
``mx.async_eval`` looks evaluated while its transfer may still be waiting for
a peer, and the rank must not block on it.  Values are encoded only when the
kernel asks for them (:func:`collect`), so an unviewed trace costs little.
"""

from __future__ import annotations

import copy
import io
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mxnb import snapshot
from mxnb.engine import check, entries, hooks
from mxnb.engine.evaltime import EvalTimer

__all__ = ["Recorder", "collect", "install", "recorder", "set_recording"]

#: Ops whose input and output values are kept per cell; later ops keep metadata only.
MAX_VALUE_OPS = 32
#: Bytes of arrays a cell's trace may keep alive; beyond it, metadata only.
MAX_HELD_BYTES = 256 * 1024**2
#: Ops recorded per cell at all; later ones are only counted.
MAX_RECORDS = 5000
#: Seconds to wait, at collect time, for arrays whose evaluation is in flight.
READ_GRACE = 2.0

_PRIMITIVE = re.compile(r"shape=rectangle")


def _has_pending_graph(a: Any) -> bool | None:
    import mlx.core as mx

    buf = io.StringIO()
    try:
        mx.export_to_dot(buf, a)
    except Exception:
        return None
    return _PRIMITIVE.search(buf.getvalue()) is not None


_dot_understood: bool | None = None


def is_evaluated(a: Any) -> bool:
    """True if ``a`` has no pending graph: MLX evaluated (or scheduled) it.

    ``export_to_dot`` lists the unevaluated part of a graph without running
    it; evaluated arrays are detached by MLX and show up as a bare leaf.  If
    a future MLX writes that graph differently (checked once on a known lazy
    array), every array counts as unevaluated: no value, but nothing run.
    """
    global _dot_understood
    if _dot_understood is None:
        import mlx.core as mx

        _dot_understood = _has_pending_graph(mx.zeros(1) + 1) is True
    if not _dot_understood:
        return False
    return _has_pending_graph(a) is False


# -- groups: which world ranks a split group holds ---------------------------

#: id(Group) -> (path, rank in group, size); ids are checked against rank/size.
_groups: dict[int, tuple[str, int, int]] = {}
#: path -> (rank in group, size) for every group this rank belongs to.
_memberships: dict[str, tuple[int, int]] = {}
_splits: dict[str, int] = {}
_real_split: Any = None


def group_path(group: Any) -> tuple[str, int, int]:
    """A name for ``group`` that every member derives the same way.

    ``world/2:1`` is the subgroup of colour 1 made by the second split of the
    world.  Split is collective, so all members count splits identically.
    """
    from mxnb.engine.session import world

    if group is None:
        w = world()
        return "world", w.rank(), w.size()
    rank, size = group.rank(), group.size()
    known = _groups.get(id(group))
    if known is not None and known[1:] == (rank, size):
        return known
    if size == world().size():
        return "world", rank, size
    return f"?{size}", rank, size


def _tracking_split(self: Any, *args: Any, **kwargs: Any) -> Any:
    child = _real_split(self, *args, **kwargs)
    parent = group_path(self)[0]
    color = args[0] if args else kwargs.get("color")
    _splits[parent] = _splits.get(parent, 0) + 1
    path = f"{parent}/{_splits[parent]}:{color}"
    entry = (path, child.rank(), child.size())
    _groups[id(child)] = entry
    _memberships[path] = entry[1:]
    return child


# -- the recorder ---------------------------------------------------------------


@dataclass
class Record:
    """One op on this rank, as shipped to the kernel (plus handles until read)."""

    meta: dict[str, Any]
    handles: dict[str, Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Observer that records every op of the current cell; see the module doc."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.dropped = 0
        self.held = 0
        self.kept_ops = 0
        self.cell_t0 = time.perf_counter()
        self.finished: dict[str, Any] | None = None
        self.enabled = True
        self.timer = EvalTimer(is_evaluated)

    # cell boundaries (IPython events on the rank's shell)

    def start_cell(self, *_: Any) -> None:
        held = any(rec.handles for rec in (self.finished or {}).get("records", ()))
        self.records, self.dropped, self.held, self.kept_ops = [], 0, 0, 0
        self.cell_t0 = time.perf_counter()
        self.finished = None
        self.timer = EvalTimer(is_evaluated)
        if held:
            # MLX caches the buffers of the arrays the last trace kept alive; a
            # loop that then cycles through dozens of cold cached buffers ran
            # ~1.4x slower at 1 MB (bench/README.md), so give them back.
            import mlx.core as mx

            mx.clear_cache()

    def end_cell(self, *_: Any) -> None:
        """Decide, now, what the user's code evaluated; drop handles to the rest."""
        self.timer.end_cell()  # before handles to unevaluated arrays are dropped
        for rec in self.records:
            for side, h in list(rec.handles.items()):
                if not is_evaluated(h):  # never raises: a failed look counts as lazy
                    rec.states[side] = "lazy"
                    del rec.handles[side]
        self.finished = {"enabled": self.enabled, "records": self.records, "dropped": self.dropped}
        self.records = []
        self.held = 0

    # hooks.Observer

    def before(self, call: hooks.OpCall) -> None:
        call.extra["trace.t0"] = time.perf_counter()

    def after(self, call: hooks.OpCall) -> None:
        t1 = time.perf_counter()
        if len(self.records) >= MAX_RECORDS:
            self.dropped += 1
            return
        t0 = call.extra.get("trace.t0", t1)
        try:
            self.records.append(self._record(call, t0, t1))
        except Exception:  # recording must never break the user's op: count it instead
            self.dropped += 1

    def _record(self, call: hooks.OpCall, t0: float, t1: float) -> Record:
        import mlx.core as mx

        op = call.op
        path, grank, gsize = group_path(call.kwargs.get("group"))
        peer, x = call.peer, call.x
        out = call.result
        site = call.site
        meta: dict[str, Any] = {
            "seq": call.seq,
            "op": op,
            "group": path,
            "group_rank": grank,
            "group_size": gsize,
            "peer": peer,
            "site": None
            if site is None
            else {"file": site.filename, "line": site.line, "code": site.code.rstrip()},
            "t": t0 - self.cell_t0,
            "call_s": t1 - t0,  # building the graph node: no data moves here
        }
        if op == "recv":
            meta["in"] = None
        elif isinstance(x, mx.array):
            meta["in"] = {"shape": list(x.shape), "dtype": check.dtype_name(x.dtype)}
        rec = Record(meta)
        if isinstance(out, mx.array):
            meta["out"] = {"shape": list(out.shape), "dtype": check.dtype_name(out.dtype)}
        sides = {"after": out}
        if op == "recv":
            rec.states["before"] = "none"
        elif op == "recv_like":
            rec.states["before"] = "template"  # only its shape and dtype matter
        else:
            sides["before"] = x
        keep = self.kept_ops < MAX_VALUE_OPS
        for side, a in sides.items():
            if not isinstance(a, mx.array):
                rec.states[side] = "none"
            elif not keep or self.held + a.nbytes > MAX_HELD_BYTES:
                rec.states[side] = "limit"
            else:
                rec.handles[side] = copy.copy(a)  # our own handle: no data copy, no eval
                self.held += a.nbytes
        if rec.handles:
            self.kept_ops += 1
        self.timer.follow(meta, out, rec.handles.get("after"))
        return rec

    def on_eval(self, arrays: Sequence[Any], seconds: float, entry: str) -> None:
        """Evaluation listener (:mod:`mxnb.engine.entries`): time the ops it ran."""
        self.timer.on_eval(arrays, seconds, entry)


def _read(handles: list[Any], deadline: float) -> dict[int, Any]:
    """Wait (in a helper thread) for each leaf's data; stop waiting at ``deadline``.

    Returns index -> NumPy view, ``"bf16"`` (ready, needs a dtype view), or an
    exception (e.g. a placeholder traced by ``mx.compile``).
    """
    import numpy as np

    got: dict[int, Any] = {}

    def work() -> None:
        for i, h in enumerate(handles):
            try:
                # the buffer protocol: no evaluation entry point (they may be wrapped)
                got[i] = np.asarray(memoryview(h))
            except Exception as e:  # placeholder of a compile trace, or bfloat16
                got[i] = "bf16" if "bfloat16" in str(e) else e

    t = threading.Thread(target=work, name="mxnb-trace-read", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    return dict(got)


def _snapshot(rec: Record, side: str, value: Any, h: Any) -> None:
    import mlx.core as mx
    import numpy as np

    dtype = check.dtype_name(h.dtype)
    if isinstance(value, Exception):
        rec.states[side] = "traced" if "primitive" in str(value) else "error"
        rec.meta.setdefault("errors", {})[side] = str(value).splitlines()[0]
        return
    if isinstance(value, str):  # bfloat16: ready; reinterpret the bits as float32
        bits = np.asarray(memoryview(h.view(mx.uint16))).astype(np.uint32) << 16
        value = bits.view(np.float32)
    digest = side == "after" and rec.meta["op"] in hooks.AGREEING
    rec.meta[side] = snapshot.encode(value, dtype=dtype, digest=digest)
    rec.states[side] = "ok"


def finish_reads(recs: list[Record]) -> None:
    """Read the values of evaluated arrays; mark those still in flight."""
    jobs = [(rec, side, h) for rec in recs for side, h in rec.handles.items()]
    values = _read([h for _, _, h in jobs], time.monotonic() + READ_GRACE) if jobs else {}
    for i, (rec, side, h) in enumerate(jobs):
        if i in values:
            _snapshot(rec, side, values[i], h)
        else:
            rec.states[side] = "in_flight"
    for rec in recs:
        rec.handles.clear()


_recorder: Recorder | None = None


def recorder() -> Recorder:
    global _recorder
    if _recorder is None:
        _recorder = Recorder()
    return _recorder


def install() -> None:
    """Observe ops, follow cell boundaries and splits on this rank; idempotent."""
    global _real_split
    import mlx.core as mx

    hooks.install()
    rec = recorder()
    cls = mx.distributed.Group
    if _real_split is None:
        # Wraps whatever split is there (mxnb's checked-mode mirror, or MLX's);
        # __mxnb_original__ tells other installers that split is already wrapped.
        _real_split = cls.split

        def split(self: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            return _tracking_split(self, *args, **kwargs)

        split.__doc__ = _real_split.__doc__
        split.__mxnb_original__ = getattr(_real_split, "__mxnb_original__", _real_split)  # type: ignore[attr-defined]
        cls.split = split
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and not getattr(shell, "_mxnb_trace_events", False):
        shell.events.register("pre_run_cell", rec.start_cell)
        shell.events.register("post_run_cell", rec.end_cell)
        shell._mxnb_trace_events = True
    set_recording(rec.enabled)


def set_recording(on: bool) -> bool:
    """Turn recording on or off on this rank; returns the new state."""
    rec = recorder()
    rec.enabled = bool(on)
    if rec.enabled:
        hooks.add_observer(rec)
        entries.add_eval_listener(rec.on_eval)
    else:
        hooks.remove_observer(rec)
        entries.remove_eval_listener(rec.on_eval)
    return rec.enabled


def collect() -> dict[str, Any]:
    """The last finished cell's trace on this rank, values encoded (run via apply)."""
    from mxnb.engine.session import world

    rec = recorder()
    w = world()
    out: dict[str, Any] = {"rank": w.rank(), "size": w.size(), "enabled": rec.enabled}
    done = rec.finished
    if done is None:
        out.update(cell=False, ops=[], groups={}, dropped=0)
        return out
    finish_reads(done["records"])
    ops = []
    for r in done["records"]:
        meta = dict(r.meta)
        meta["states"] = dict(r.states)
        ops.append(meta)
    done["records"] = [Record(m, {}, m["states"]) for m in ops]  # collect twice: same answer
    # every group this rank is in, so peers of unmatched sends can be named too
    groups = {p: list(v) for p, v in _memberships.items()}
    groups["world"] = [w.rank(), w.size()]
    out.update(cell=True, enabled=done["enabled"], ops=ops, groups=groups, dropped=done["dropped"])
    return out
