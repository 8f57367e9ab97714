"""Who waits for whom, right now: the model behind the live strip and the hang picture.

Built from the same probe answers the hang diagnosis reads
(:mod:`mxnb.rank.probe_server`), so showing it costs no extra round trip.
Each rank is computing, waiting (on named peers), finished, failed or silent;
a wait on a peer that finished or failed is a *missing peer*, and waits that
go round in a circle are a *cycle*.  Pure: tested without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mxnb.kernel.diagnose import collective_count, kth_collective, waiting_op
from mxnb.kernel.waitfor import cycles
from mxnb.protocol.ops import COLLECTIVES
from mxnb.protocol.wording import op_text, rank_on, ranks_text

__all__ = ["RankNow", "WaitGraph", "wait_graph"]


@dataclass(frozen=True)
class RankNow:
    rank: int
    status: str  # running | done | failed | silent
    op: str  # the op it is in, e.g. "all_sum #3 of float32[4]", or ""
    site: str  # where in the cell
    waits_on: tuple[int, ...]  # world ranks
    seconds: float  # in its current wait or evaluation
    host: str = ""  # where it runs, when the ranks span hosts

    def text(self) -> str:
        """``rank 2: waits on rank 1 in recv #2 from rank 1 of float32[4] (3.1 s), at ...``
        (``rank 2 on node2: ...`` when the ranks span hosts)."""
        me = rank_on(self.rank, self.host)
        if self.status == "done":
            return f"{me}: finished the cell"
        if self.status == "failed":
            return f"{me}: raised an exception"
        if self.status == "silent":
            return f"{me}: not answering"
        at = f", at {self.site}" if self.site else ""
        if self.waits_on:
            who = ranks_text(self.waits_on)
            return f"{me}: waits on {who} in {self.op} ({self.seconds:.1f} s){at}"
        if self.op:
            return f"{me}: computing {self.op} ({self.seconds:.1f} s){at}"
        return f"{me}: computing{at}"


@dataclass(frozen=True)
class WaitGraph:
    ranks: list[RankNow]
    cycles: list[list[int]] = field(default_factory=list)
    #: ranks waited on that finished or failed: they will never come
    missing: list[int] = field(default_factory=list)

    def text(self) -> str:
        lines = [r.text() for r in self.ranks]
        for c in self.cycles:
            lines.append(f"{ranks_text(c)} wait on each other in a cycle")
        if self.missing:
            lines.append(f"waited on, but finished or failed: {ranks_text(self.missing)}")
        return "\n".join(lines)


def _peers(state: Mapping[str, Any], op: Mapping[str, Any], states: Mapping[int, Any],
           rank: int, gone: set[int]) -> set[int]:  # fmt: skip
    """Whom ``rank`` waits on in ``op``: its peer, or the members not yet in that collective."""
    if op["op"] not in COLLECTIVES:
        needs = set((state.get("in_eval") or {}).get("ops", [])) or {op["seq"]}
        ops = [o for o in state.get("ops") or [] if o["seq"] in needs and o["peer"] is not None]
        return {o["peer"] for o in ops if o["op"] not in COLLECTIVES} or {op["peer"]}
    # a member is there if it waits in the same collective of the group (the
    # k-th, as MPI pairs them), or, still running, ran its k-th already; ranks
    # that ran a group's collectives in different orders so wait on each other,
    # and a member that left the cell is waited on (a missing peer)
    group = op["group"]
    k = collective_count(state.get("ops") or [], group, op["seq"])
    here = set()
    for m in op["group_ranks"]:
        theirs_state = states.get(m) or {}
        ops = theirs_state.get("ops") or []
        theirs = waiting_op(theirs_state)
        if theirs is not None and theirs["op"] in COLLECTIVES and theirs["group"] == group:
            if collective_count(ops, group, theirs["seq"]) == k:
                here.add(m)
                continue
        kth = kth_collective(ops, group, k)
        ran = kth is not None and kth["evaluated"] and m not in gone
        if ran and (theirs is None or theirs["seq"] != kth["seq"]):
            here.add(m)
    return set(op["group_ranks"]) - here - {rank}


def wait_graph(states: Mapping[int, Any], status: Mapping[int, str], now: float | None = None,
               hosts: Mapping[int, str] | None = None) -> WaitGraph:  # fmt: skip
    """``status`` per rank: running, done or failed; ``hosts``: rank -> host when the
    ranks span hosts (as :func:`~.diagnose.diagnose` takes them)."""
    now = time.time() if now is None else now
    gone = {r for r, s in status.items() if s in ("done", "failed")}
    out, edges = [], {}
    for rank in sorted(status):
        state = states.get(rank)
        st = status[rank] if status[rank] != "running" or state else "silent"
        op, waits, since = None, set(), None
        if st == "running":
            op = waiting_op(state)
            busy = state.get("waiting") or state.get("in_eval")
            since = busy["since"] if busy else None
            if op is not None:
                waits = _peers(state, op, states, rank, gone)
                edges[rank] = waits
        text = op_text(op["op"], op["seq"], op["peer"], op["dtype"], op["shape"]) if op else ""
        site = (op or {}).get("site") or (state or {}).get("line") or ""
        secs = max(0.0, now - since) if since else 0.0
        host = (hosts or {}).get(rank, "")
        out.append(RankNow(rank, st, text, site, tuple(sorted(waits)), secs, host))
    missing = sorted({p for w in edges.values() for p in w} & gone)
    running = {r: {p for p in w if p in edges} for r, w in edges.items()}
    return WaitGraph(out, cycles(running), missing)
