"""A trace from what the probes saw, for ranks that had to be stopped.

Ranks blocked inside MPI ignore interrupts, so their job is stopped and the
values they recorded go with them.  Their last probe answers still list
every op each rank called in the cell (op, types, group, peer, line,
evaluated or not): enough for the timeline and a row per rank, with the
values said to be lost rather than left blank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mxnb.protocol.messages import OpTrace, TraceReport

__all__ = ["reports_from_probes"]

_SITE = re.compile(r"line (\d+): (.*)$")


def _op(rank: int, o: Mapping[str, Any], stuck: bool) -> OpTrace:
    members = list(o["group_ranks"])
    m = _SITE.search(o.get("site") or "")
    typed = {"shape": list(o["shape"]), "dtype": o["dtype"]}
    recv = o["op"] == "recv"  # recv_like is logged as recv: no input of its own
    after = "in_flight" if stuck else ("stopped" if o["evaluated"] else "lazy")
    return {  # type: ignore[typeddict-unknown-key]
        "seq": o["seq"], "op": o["op"], "group": o["group"],
        "group_rank": members.index(rank) if rank in members else 0,
        "group_size": len(members),
        "peer": members.index(o["peer"]) if o["peer"] in members else None,
        "stream": o.get("stream"),
        "site": {"file": "", "line": int(m.group(1)), "code": m.group(2)} if m else None,
        "t": 0.0, "call_s": 0.0, "eval_s": None, "eval_by": None, "eval_ops": 0,
        "eval_arrays": 0, "eval_note": "stopped",
        "in": None if recv else typed, "out": typed,
        "states": {"before": "none" if recv else "stopped", "after": after},
    }  # fmt: skip


def reports_from_probes(
    states: Mapping[int, Mapping[str, Any] | None], size: int
) -> list[TraceReport]:
    """One trace report per rank that answered, built from its probe answer."""
    out: list[TraceReport] = []
    for rank, st in sorted(states.items()):
        if not st:
            continue
        stuck = set((st.get("in_eval") or {}).get("ops", []))
        if st.get("waiting"):
            stuck.add(st["waiting"]["seq"])
        ops = st.get("ops") or []
        out.append({
            "rank": rank, "size": size, "enabled": True, "kept": False, "cell": True,
            "ops": [_op(rank, o, o["seq"] in stuck) for o in ops],
            "groups": {o["group"]: list(o["group_ranks"]) for o in ops},
            "dropped": 0,
        })  # fmt: skip
    return out
