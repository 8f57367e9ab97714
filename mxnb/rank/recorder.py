"""The recorder: what every ``mx.distributed`` op of a cell saw on this rank.

It is an observer on :mod:`mxnb.rank.hooks`.  At call time it records only
metadata (op, group, peer, shapes, dtypes, cell line, time) and keeps a
*handle* (``copy.copy``: the same lazy graph node, no copy of data and no
evaluation) to the op's input and output.  It never evaluates anything.

Timing.  The call of an op only builds a graph node (``call_s``); its data
moves when the result is evaluated.  While recording, an
:class:`~mxnb.rank.evaltime.EvalTimer` listens to the rank's evaluations and
gives each op ``eval_s``, the wall time of the evaluation that ran it, or
says why it has none (see :mod:`mxnb.rank.evaltime`).

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
kernel asks for them (:meth:`Recorder.collect`), so an unviewed trace costs little.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mxnb.protocol import snapshot
from mxnb.protocol.messages import OpTrace, TraceReport
from mxnb.protocol.ops import AGREEING
from mxnb.rank import check, hooks
from mxnb.rank.evaltime import EvalTimer
from mxnb.rank.graph import has_pending_graph
from mxnb.rank.groups import Groups
from mxnb.rank.pairing import stream_name

__all__ = ["Recorder", "is_evaluated"]

#: Ops whose input and output values are kept per cell; later ops keep metadata only.
MAX_VALUE_OPS = 32
#: Bytes of arrays a cell's trace may keep alive; beyond it, metadata only.
MAX_HELD_BYTES = 256 * 1024**2
#: Ops recorded per cell at all; later ones are only counted.
MAX_RECORDS = 5000
#: Seconds to wait, at collect time, for arrays whose evaluation is in flight.
READ_GRACE = 2.0


class _DotFormat:
    """Whether this MLX writes graphs as :func:`is_evaluated` expects (checked once)."""

    understood: bool | None = None


def is_evaluated(a: Any) -> bool:
    """True if ``a`` has no pending graph: MLX evaluated (or scheduled) it.

    ``export_to_dot`` lists the unevaluated part of a graph without running
    it; evaluated arrays are detached by MLX and show up as a bare leaf.  If
    a future MLX writes that graph differently (checked once on a known lazy
    array), every array counts as unevaluated: no value, but nothing run.
    """
    if _DotFormat.understood is None:
        import mlx.core as mx

        _DotFormat.understood = has_pending_graph(mx.zeros(1) + 1) is True
    if not _DotFormat.understood:
        return False
    return has_pending_graph(a) is False


# -- the recorder ---------------------------------------------------------------


@dataclass
class Record:
    """One op on this rank, as shipped to the kernel (plus handles until read)."""

    meta: OpTrace
    handles: dict[str, Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Observer that records every op of the current cell; see the module doc."""

    def __init__(self, groups: Groups) -> None:
        self.groups = groups
        self.records: list[Record] = []
        self.dropped = 0
        self.held = 0
        self.kept_ops = 0
        self.cell_t0 = time.perf_counter()
        self.finished: dict[str, Any] | None = None
        self.enabled = True
        #: hold every op's input and output (``--viz``); by default only weak
        #: references, so MLX reuses buffers as it would without mxnb
        self.keep = False
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
                if isinstance(h, weakref.ref):
                    h = h()
                    if h is None:  # the cell let go of it, and so did we
                        rec.states[side] = "released"
                        del rec.handles[side]
                        continue
                    rec.handles[side] = h  # the cell holds it: holding it too costs nothing
                if not is_evaluated(h):  # never raises: a failed look counts as lazy
                    # an evaluation whose check was interrupted was under way, not skipped
                    stuck = rec.meta.get("eval_note") == "interrupted" and side == "after"
                    rec.states[side] = "in_flight" if stuck else "lazy"
                    del rec.handles[side]
        self.finished = {"enabled": self.enabled, "kept": self.keep, "records": self.records,
                         "dropped": self.dropped}  # fmt: skip
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
        array = _mx_array()
        op = call.op
        info = self.groups.of(call.kwargs.get("group"))
        grank = info.ranks.index(self.groups.rank)
        peer, x = call.peer, call.x
        out = call.result
        site = call.site
        meta: OpTrace = {
            "seq": call.seq,
            "op": op,
            "group": info.label,
            "group_rank": grank,
            "group_size": len(info.ranks),
            "peer": peer,
            "stream": stream_name(call.kwargs["stream"]) if call.kwargs.get("stream") else None,
            "site": None
            if site is None
            else {"file": site.filename, "line": site.line, "code": site.code.rstrip()},
            "t": t0 - self.cell_t0,
            "call_s": t1 - t0,  # building the graph node: no data moves here
        }
        if op == "recv":
            meta["in"] = None
        elif isinstance(x, array):
            meta["in"] = {"shape": list(x.shape), "dtype": check.dtype_name(x.dtype)}
        rec = Record(meta)
        if isinstance(out, array):
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
            if not isinstance(a, array):
                rec.states[side] = "none"
            elif not keep or self.held + a.nbytes > MAX_HELD_BYTES:
                rec.states[side] = "limit"
            elif self.keep:
                rec.handles[side] = copy.copy(a)  # our own handle: no data copy, no eval
                self.held += a.nbytes
            else:
                rec.handles[side] = weakref.ref(a)
        if rec.handles:
            self.kept_ops += 1
        self.timer.follow(meta, out, rec.handles.get("after") if self.keep else None)
        return rec

    def on_eval(
        self, arrays: Sequence[Any], seconds: float | None, entry: str, check_s: float | None = None
    ) -> None:
        """Evaluation listener (:mod:`mxnb.rank.entries`): time the ops it ran."""
        self.timer.on_eval(arrays, seconds, entry, check_s)


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
    digest = side == "after" and rec.meta["op"] in AGREEING
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


def collect(rec: Recorder, groups: Groups) -> TraceReport:
    """The last finished cell's trace on this rank, values encoded (run via apply)."""
    rank, size = groups.rank, len(groups.world.ranks)
    done = rec.finished
    host = socket.gethostname()
    if done is None:
        return {"rank": rank, "size": size, "enabled": rec.enabled, "kept": rec.keep,
                "cell": False, "ops": [], "groups": {}, "dropped": 0, "host": host}  # fmt: skip
    finish_reads(done["records"])
    ops: list[OpTrace] = []
    for r in done["records"]:
        meta: OpTrace = {**r.meta, "states": dict(r.states)}  # type: ignore[typeddict-item]
        ops.append(meta)
    done["records"] = [Record(m, {}, m["states"]) for m in ops]  # collect twice: same answer
    # every group this rank is in, so peers of unmatched sends can be named too
    memberships = {label: list(ranks) for label, ranks in groups.memberships().items()}
    return {
        "rank": rank, "size": size, "enabled": done["enabled"], "kept": done["kept"],
        "cell": True, "ops": ops, "groups": memberships, "dropped": done["dropped"],
        "host": host,
    }  # fmt: skip


def _mx_array() -> Any:
    """MLX's array type, without an import statement on every op."""
    global _ARRAY
    if _ARRAY is None:
        import mlx.core as mx

        _ARRAY = mx.array
    return _ARRAY


_ARRAY: Any = None
