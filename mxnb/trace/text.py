"""How a trace reads: values, ranks, shapes and times as short text.

Shared by the text summary (:meth:`mxnb.trace.Trace.text`), the widget and
its picture, so all three say the same thing.  Ranks, ops and shapes are
worded by :mod:`mxnb.protocol.wording`, which the ranks use too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mxnb.protocol.snapshot import decode
from mxnb.protocol.wording import shape_text

__all__ = [
    "ONE_REASON",
    "STATE_TEXT",
    "UNTIMED_TEXT",
    "count",
    "describe_value",
    "seconds_text",
    "shape_text",
    "timing_text",
]

STATE_TEXT = {
    "lazy": "(not evaluated by the cell)",
    "in_flight": "(still in flight when read)",
    "refused": "(never ran: the ranks disagree on this op, and mxnb's check stopped it)",
    "traced": "(traced by mx.compile/vmap: no value)",
    "compiled": "(inside mx.compile: not visible to Python)",
    "vmapped": "(inside mx.vmap: Python saw one example, MLX ran the batch)",
    "limit": "(not kept: trace limit reached)",
    "released": "(not kept: the cell let go of it, so MLX could reuse its memory; --viz keeps it)",
    "none": "-",
    "converted": "(a Python or NumPy value MLX converted: not recorded)",
    "template": "(template: shape and dtype only)",
    "error": "(could not be read)",
    "stopped": "(lost: the ranks were stopped while blocked in MPI)",
}
#: States whose reason is the same for an op's input and result: said once.
ONE_REASON = ("compiled", "vmapped")


def sent_text(dst: int | None, received: bool) -> str:
    """A send's result as every view words it: MLX's send returns its input,
    and the message is on the other rank now (``received``), or not taken yet."""
    where = f"rank {dst}" if dst is not None else "the other rank"
    if not received:
        return f"sent (send returns its input; no recv on {where} took it in this cell)"
    return f"sent (send returns its input; {where} holds the message)"


#: What a view says of values it does not show exactly (``snapshot.encode``):
#: every value, rounded to 16 bits of the range; or block means on a smaller grid.
SAMPLED_TEXT = {
    "rounded": "every value, rounded to 1/65534 of the range (exact up to {limit} values)",
    "blocks": "downsampled {shape} to {dshape} (block means)",
}


def sampled_text(snap: dict[str, Any]) -> str:
    """Why a snapshot's values are not exact, as the text, widget and picture say it."""
    from mxnb.protocol.snapshot import EXACT_LIMIT

    if all(f == 1 for f in snap.get("factors") or [1]):
        return SAMPLED_TEXT["rounded"].format(limit=EXACT_LIMIT)
    shape, dshape = ("x".join(map(str, snap[k])) for k in ("shape", "dshape"))
    return SAMPLED_TEXT["blocks"].format(shape=shape, dshape=dshape)


#: The words on a part of a value that came from, or goes to, another rank.
TAG_TEXT = {
    "gathered": "from rank {rank}",  # all_gather: a block of the result
    "scattered": "\u2192 rank {rank}",  # sum_scatter: a block of the input, summed on that rank
    "sum_rows": "rows {first}-{last} of the sum",  # sum_scatter: what the result is
    "sent": "sent to rank {rank}",  # a send's input
    "received": "from rank {rank}",  # a recv's result
}


def tag_text(kind: str, **at: int) -> str:
    """One provenance tag, as the widget (``words.tags``) and the picture write it."""
    return TAG_TEXT[kind].format(**at)


#: Why a rank has no row in an op (see :meth:`mxnb.trace.view.StepView.absence`).
ABSENT_TEXT = {
    "outside": "not in this group",
    "missing": "never called this op (it stopped or skipped it)",
    "apart": "no part in this op",
}


#: Why an op has no evaluation time, by ``eval_note``.
UNTIMED_TEXT = {
    "indirect": "not timed: evaluated as part of a larger expression",
    "async": "not timed: mx.async_eval returns before the transfer ends",
    "lazy": "not evaluated",
    "stopped": "not timed: the ranks were stopped",
    "interrupted": "interrupted while mxnb's check waited for the other ranks; MLX never ran it",
    "refused": "refused by mxnb's check, which found the ranks disagree; MLX never ran it",
    "held_back": "not run: mxnb's check refused another op just before its evaluation",
    "vmapped": "not timed: MLX runs its batch with the result of mx.vmap",
    "unknown": "not timed",
}


def seconds_text(s: float) -> str:
    """A duration for people: ``0.042 ms``, ``3.2 ms``, ``210 ms``, ``1.5 s``."""
    ms = s * 1e3
    if ms < 0.001:
        return "<0.001 ms"
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{s:.3g} s" if s < 100 else f"{s:.0f} s"


def count(n: int, what: str) -> str:
    """``1 op``, ``2 ops``."""
    return f"{n} {what}{'' if n == 1 else 's'}"


def timing_text(m: dict[str, Any]) -> str:
    """How long the evaluation that ran this op took on one rank, or why it is not timed.

    That evaluation may have computed other things too; they are named, since
    its time cannot be split between them.
    """
    s = m.get("eval_s")
    if s is None:
        return UNTIMED_TEXT.get(m.get("eval_note") or "unknown", "not timed")
    ops = max(1, m.get("eval_ops", 1))
    others = [count(ops - 1, "other op")] if ops > 1 else []
    if m.get("eval_arrays", 0) > ops:
        others.append(count(m["eval_arrays"] - ops, "other array"))
    text = f"evaluated in {seconds_text(s)} by {m.get('eval_by') or 'an evaluation'}"
    text += f" (with {' and '.join(others)})" if others else ""
    if m.get("check_s") is not None:
        text += f"; before it, mxnb's check waited {seconds_text(m['check_s'])} (not counted)"
    return text


def _fmt_num(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, complex | np.complexfloating):
        return f"{v.real:.6g}{v.imag:+.6g}j"
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float | np.floating) else str(v)


def _fmt_nested(a: np.ndarray, dtype: str) -> str:
    if a.ndim == 0:
        v = a.item()
        return _fmt_num(bool(v) if dtype == "bool" else v)
    return "[" + " ".join(_fmt_nested(x, dtype) for x in a) + "]"


def describe_value(snap: dict[str, Any] | None, state: str, limit: int = 8) -> str:
    """One line for a snapshot: exact values when few, else exact min/max/mean."""
    if state != "ok" or snap is None:
        return STATE_TEXT.get(state, f"({state})")
    n = int(np.prod(snap["shape"])) if snap["shape"] else 1
    if snap["exact"] and n <= limit:
        return _fmt_nested(decode(snap), snap["dtype"])
    st = snap["stats"]
    parts = [f"min {_fmt_num(st['min'])} max {_fmt_num(st['max'])} mean {st['mean']:.6g}"]
    if st["min"] is None:
        parts = ["no finite values"]
    if st["nan"] or st["inf"]:
        parts.append(f"{st['nan']} nan, {st['inf']} inf")
    if not snap["exact"]:
        parts.append(sampled_text(snap))
    return "; ".join(parts)
