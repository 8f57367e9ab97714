"""Hand-made trace reports, as the ranks send them: every case is known exactly.

Shared by the trace, widget, picture and golden tests, which build traces
without a cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mxnb.protocol.snapshot import encode


def op(
    seq: int,
    name: str,
    rank: int,
    x: np.ndarray | None,
    y: np.ndarray | None,
    *,
    n: int = 2,
    peer: int | None = None,
    line: int = 1,
    code: str = "",
    states: dict[str, str] | None = None,
    eval_s: float | None = 0.0032,
    note: str | None = None,
    eval_ops: int = 1,
    eval_arrays: int | None = None,
    group: str = "world",
    group_rank: int | None = None,
) -> dict[str, Any]:
    """One rank's record of one op, as ``mxnb.rank.recorder.collect`` ships it."""
    if (states or {}).get("after") == "lazy":
        eval_s, note = None, "lazy"
    m: dict[str, Any] = {
        "seq": seq,
        "op": name,
        "group": group,
        "group_rank": rank if group_rank is None else group_rank,
        "group_size": n,
        "peer": peer,
        "site": {"file": f"/tmp/cell-{rank}.py", "line": line, "code": code},
        "t": 0.001 * seq,
        "call_s": 2e-5,
        "eval_s": eval_s,
        "eval_by": "mx.eval" if eval_s is not None else None,
        "eval_ops": eval_ops if eval_s is not None else 0,
        "eval_arrays": (eval_ops if eval_arrays is None else eval_arrays) if eval_s else 0,
        "eval_note": note,
        "in": None if x is None else {"shape": list(x.shape), "dtype": str(x.dtype)},
        "out": None if y is None else {"shape": list(y.shape), "dtype": str(y.dtype)},
        "states": dict(states or {}),
    }
    for side, a in (("before", x), ("after", y)):
        if a is not None and m["states"].get(side, "ok") == "ok":
            m[side] = encode(a, digest=side == "after")
            m["states"][side] = "ok"
    return m


def report(
    rank: int, ops: list[dict[str, Any]], n: int = 2, groups: dict[str, list[int]] | None = None
) -> dict[str, Any]:
    """One rank's trace report; ``groups`` adds split groups: label -> world ranks."""
    return {
        "rank": rank,
        "size": n,
        "enabled": True,
        "cell": True,
        "ops": ops,
        "groups": {"world": list(range(n)), **(groups or {})},
        "dropped": 0,
    }
