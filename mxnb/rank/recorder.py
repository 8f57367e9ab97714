"""The recorder: what every ``mx.distributed`` op of a cell saw on this rank.

The op log (:mod:`mxnb.rank.oplog`) hands it each op's record while it is
recording.  At call time it notes on that record two clock readings and a
*handle* on the op's input and output: a weak reference, or with ``--viz``
``copy.copy`` (the same lazy graph node, no copy of data and no evaluation).
What is shipped to the kernel (:class:`~mxnb.protocol.messages.OpTrace`) is
written once, when the cell ends: an op in a timed loop costs the trace no
object of its own (issue 18).  It never evaluates anything.

Timing.  The call of an op only builds a graph node (``call_s``); its data
moves when the result is evaluated.  While recording, an
:class:`~mxnb.rank.evaltime.EvalTimer` hears of the rank's evaluations from
the op log and gives each op ``eval_s``, the wall time of the evaluation that ran it, or
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mxnb.protocol.messages import OpTrace, TraceReport, in_call_order, run_order_digest
from mxnb.protocol.ops import AGREEING, COLLECTIVES
from mxnb.rank import check, hooks
from mxnb.rank.evaltime import EvalTimer
from mxnb.rank.graph import has_pending_graph
from mxnb.rank.groups import Groups

if TYPE_CHECKING:
    from mxnb.rank.oprecord import OpRecord

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
    """Records every op of the current cell, from the op log; see the module doc."""

    def __init__(self, groups: Groups) -> None:
        self.groups = groups
        self.ops: list[OpRecord] = []
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

    @property
    def late(self) -> dict[str, str]:
        """Groups whose collectives the last cell ran out of call order here,
        and in which order (:class:`~mxnb.protocol.messages.OrderPayload`)."""
        return (self.finished or {}).get("late", {})

    def start_cell(self, *_: Any) -> None:
        held = any(rec.handles for rec in (self.finished or {}).get("records", ()))
        self.ops, self.dropped, self.held, self.kept_ops = [], 0, 0, 0
        self.cell_t0 = time.perf_counter()
        self.finished = None
        self.timer.reset()  # the same object: the C path reads its untimed ops
        if held:
            # MLX caches the buffers of the arrays the last trace kept alive; a
            # loop that then cycles through dozens of cold cached buffers ran
            # ~1.4x slower at 1 MB (bench/README.md), so give them back.
            import mlx.core as mx

            mx.clear_cache()

    def end_cell(self, *_: Any) -> None:
        """Decide, now, what the user's code evaluated; drop handles to the rest."""
        self.timer.end_cell()  # before handles to unevaluated arrays are dropped
        sites: dict[Any, Any] = {}
        records = [self._record(op, sites) for op in self.ops]
        for rec in records:
            if rec.meta.get("eval_note") == "refused":  # mxnb's check stopped it: nothing ran
                rec.handles.pop("after", None)
                rec.states["after"] = "refused"
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
        self.finished = {"enabled": self.enabled, "kept": self.keep, "records": records,
                         "dropped": self.dropped, "late": _late_groups(self.ops)}  # fmt: skip
        self.ops = []
        self.held = 0

    # from the op log

    def before(self, rec: OpRecord, x: Any) -> None:
        """An op is called with input ``x`` (None for recv): note it, and the time.

        What is kept is written on the op's own record: an op costs the trace
        no object of its own.  Only a weak reference to ``x`` is taken (unless
        ``keep``), so a call that fails holds nothing alive.
        """
        if len(self.ops) >= MAX_RECORDS:
            self.dropped += 1
            return
        if rec.called == "recv_like":
            rec.before = "template"  # only its shape and dtype matter
        elif x is not None:
            rec.before = self._hold(x, None) if self.kept_ops < MAX_VALUE_OPS else "limit"
        rec.t = time.perf_counter()  # last: after() runs only for ops noted here

    def after(self, rec: OpRecord, out: Any, ref: Any) -> None:
        """The op returned its lazy result ``out`` (``ref``: a weak reference to it,
        None if it is not an MLX array)."""
        t1 = time.perf_counter()
        if ref is None:
            self._returned(rec, t1, None, None, "none")
        else:
            held = self._hold(out, ref) if self.kept_ops < MAX_VALUE_OPS else "limit"
            self._returned(rec, t1, ref, out.shape, held)

    def called(self, rec: OpRecord, ref: Any, nbytes: int, t0: float) -> None:
        """What :meth:`before` notes, for an op the C path noted (mxnb.rank.fastpath):
        its input was an MLX array of ``nbytes``, ``ref`` a weak reference to it."""
        if len(self.ops) >= MAX_RECORDS:
            self.dropped += 1
            return
        if ref is not None:
            rec.before = self._handle(nbytes, ref) if self.kept_ops < MAX_VALUE_OPS else "limit"
        rec.t = t0

    def returned(self, rec: OpRecord, t1: float, ref: Any, shape: Any, nbytes: int) -> None:
        """What :meth:`after` notes, for an op the C path noted."""
        held = self._handle(nbytes, ref) if self.kept_ops < MAX_VALUE_OPS else "limit"
        self._returned(rec, t1, ref, shape, held)

    def _returned(self, rec: OpRecord, t1: float, ref: Any, shape: Any, held: Any) -> None:
        rec.t, rec.call_s, rec.ref = rec.t - self.cell_t0, t1 - rec.t, ref
        if ref is not None:
            rec.out = (*rec.batch, *shape) if rec.batch else tuple(shape)
            rec.after = held  # past the ops whose values are kept: "limit", a long loop
        if not (isinstance(rec.before, str) and isinstance(rec.after, str)):
            self.kept_ops += 1
        self.ops.append(rec)
        self.timer.follow(rec)

    def replayed(self, rec: OpRecord) -> None:
        """An op of a compiled function that the evaluation starting now runs
        (:mod:`mxnb.rank.compiled`): its values stay inside MLX's compiled graph,
        and its time is that evaluation's."""
        if len(self.ops) >= MAX_RECORDS:
            self.dropped += 1
            return
        rec.t, rec.call_s = time.perf_counter() - self.cell_t0, None  # no call of its own
        rec.before = {"recv": "none", "recv_like": "template"}.get(rec.called, "compiled")
        rec.after = "compiled"
        self.ops.append(rec)
        self.timer.pending[id(rec)] = rec  # the evaluation it is handed to times it

    def forget(self, rec: OpRecord) -> None:
        """MLX refused the call noted by ``before``: drop our own handle on its input."""
        held = rec.before
        if type(held) is _mx_array():  # a handle of our own (keep), not a word or a weak ref
            self.held -= held.nbytes
            rec.before = "none"

    def _hold(self, a: Any, ref: Any) -> Any:
        """A handle on ``a``: a weak reference, or our own (``keep``); else why not."""
        if type(a) is not _mx_array():  # a number or NumPy array MLX converted itself
            return "converted"
        return self._handle(a.nbytes, ref, a)

    def _handle(self, nbytes: int, ref: Any, a: Any = None) -> Any:
        """A handle on an MLX array of ``nbytes`` (``a`` itself needed only to keep it)."""
        if self.held + nbytes > MAX_HELD_BYTES:
            return "limit"
        if self.keep:
            self.held += nbytes
            return copy.copy(a)  # our own handle: no data copy, no eval
        return ref if ref is not None else weakref.ref(a)

    def _record(self, rec: OpRecord, sites: dict[Any, Any]) -> Record:
        """What the kernel gets for one op (values are read later, if asked for)."""
        mirror = rec.mirror
        where = rec.where
        site = None
        if where is not None:
            site = sites.get(where)
            if site is None:
                at = hooks.resolve(where)
                site = sites[where] = {"file": at.filename, "line": at.line,
                                       "code": at.code.rstrip()}  # fmt: skip
        eval_s, eval_by, eval_ops, eval_arrays, check_s = rec.timing or (None, None, 0, 0, None)
        meta: OpTrace = {
            "seq": rec.seq,
            "op": rec.called,
            "group": mirror.label,
            "group_rank": mirror.ranks.index(self.groups.rank),
            "group_size": len(mirror.ranks),
            "peer": None if rec.peer is None else mirror.ranks.index(rec.peer),
            "stream": rec.stream,
            "site": site,
            "t": rec.t,
            "call_s": rec.call_s,  # building the graph node: no data moves here
            "eval_s": eval_s, "eval_by": eval_by, "eval_ops": eval_ops,
            "eval_arrays": eval_arrays, "eval_note": rec.eval_note, "check_s": check_s,
            "eval_no": rec.eval_no,
        }  # fmt: skip
        if rec.unordered:
            meta["unordered"] = rec.unordered
        typed = {"shape": list(rec.shape), "dtype": rec.dtype}
        meta["in"] = None if rec.called == "recv" else typed  # type: ignore[typeddict-unknown-key]
        if rec.out is not None:
            meta["out"] = {"shape": list(rec.out), "dtype": rec.dtype}  # type: ignore[typeddict-unknown-key]
        out = Record(meta)
        for side, h in (("before", rec.before), ("after", rec.after)):
            if rec.batch:  # what Python held was one example's placeholder (mxnb.rank.vmapped)
                out.states[side] = "vmapped"
            elif isinstance(h, str):
                out.states[side] = h
            else:
                out.handles[side] = h
        rec.before = rec.after = "none"  # the Record holds them now, until read
        return out


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
    # here, not at the top: it imports NumPy, which a rank needs only once a
    # trace is read, and which cost each rank 0.12 s of CPU as it started
    from mxnb.protocol import snapshot

    digest = side == "after" and rec.meta["op"] in AGREEING
    rec.meta[side] = snapshot.encode(value, dtype=dtype, digest=digest)
    rec.states[side] = "ok"


def _late_groups(ops: list[OpRecord]) -> dict[str, str]:
    """The groups whose collectives this rank ran out of call order, with the
    order it ran them in (:func:`~mxnb.protocol.messages.run_order_digest`)."""
    runs: dict[str, list[int | None]] = {}
    for rec in ops:
        if rec.op in COLLECTIVES:
            runs.setdefault(rec.mirror.label, []).append(rec.eval_no)
    return {label: run_order_digest(evals) for label, evals in runs.items()
            if not in_call_order(evals)}  # fmt: skip


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
