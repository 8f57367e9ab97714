"""The trace of one cell, as the kernel sees it: per-rank records merged into steps.

Each rank reports the ops it called, in its own order (:mod:`mxnb.rank.recorder`).
A *step* is one operation across ranks:

* a collective is the k-th collective on its group (MPI requires every member
  to call collectives on a group in the same order, so this is exact);
* a ``send``/``recv`` is the n-th call of that op at that cell line, on each
  rank that made it (SPMD code: the same line on every rank is one step).

Sends are paired with receives first-in-first-out per (group, source,
destination), as MPI matches them, and become :class:`Transfer` arrows.
Steps are put in an order that respects every rank's own call order.

Times: ``call_s`` is the Python call, which only builds MLX's lazy graph;
``eval_s`` is the wall time of the evaluation that ran the op (its transfer,
plus whatever else that evaluation computed), or None with ``eval_note``
saying why (see :mod:`mxnb.rank.evaltime`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mxnb.protocol.messages import OpTrace, TraceReport
from mxnb.protocol.ops import AGREEING, COLLECTIVES
from mxnb.protocol.snapshot import decode
from mxnb.protocol.wording import group_text, ranks_text, shape_text
from mxnb.trace.agree import disagreeing, inputs_note, run_order
from mxnb.trace.expect import Expected, expected
from mxnb.trace.pairs import pair_transfers

if TYPE_CHECKING:
    from mxnb.trace.ring import RingReplay

__all__ = ["Step", "Trace", "Transfer"]


@dataclass(eq=False)
class Transfer:
    """One message: a send on ``src`` and (if found) its recv on ``dst`` (world ranks)."""

    src: int | None
    dst: int | None
    group: str
    send: tuple[int, int] | None = None  # (rank, seq)
    recv: tuple[int, int] | None = None
    what: str = ""
    note: str = ""

    @property
    def matched(self) -> bool:
        return self.send is not None and self.recv is not None


@dataclass(eq=False)
class Step:
    """One operation across the ranks that took part in it."""

    index: int
    op: str
    group: str
    members: list[int]
    ranks: dict[int, OpTrace] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    #: ranks whose result is not what the op should leave there (see expected),
    #: or, when that cannot be worked out, all ranks of an op whose results differ
    mismatch: list[int] = field(default_factory=list)
    #: what each rank should hold, recomputed from the recorded inputs
    expected: Expected | None = None
    #: a collective called with different dtypes or shapes on different ranks
    inputs_note: str = ""
    #: two collectives of one group the ranks ran in different orders (see run_order)
    order_note: str = ""

    @property
    def site(self) -> dict[str, Any] | None:
        return next((m["site"] for m in self.ranks.values() if m.get("site")), None)

    def site_text(self) -> str:
        """``line 3: y = all_sum(x)``; an exchange names its send's line and its recv's."""
        sites = [self.site]
        sites += [next((m["recv_site"] for m in self.ranks.values() if m.get("recv_site")), None)]
        said = [f"line {s['line']}: {s['code'].strip()}" for s in sites if s]
        return " / ".join(said) or "(call site unknown)"

    def group_text(self) -> str:
        return group_text(self.group, self.members)

    def mismatch_text(self) -> str:
        """Who holds a wrong result, or who disagrees when that cannot be known."""
        if not self.mismatch:
            return ""
        who = ranks_text(self.mismatch)
        verb = "holds" if len(self.mismatch) == 1 else "hold"
        if self.expected is not None:
            return f"{who} {verb} a wrong result after {self.op}: expected {self.expected.how}"
        return (
            f"{who} do not all hold the same result after {self.op}, and mxnb cannot tell "
            "which is right (the inputs were not recorded exactly)"
        )

    def snap(self, rank: int, side: str) -> tuple[dict[str, Any] | None, str]:
        m = self.ranks.get(rank)
        if m is None:
            return None, "absent"
        return m.get(side), m.get("states", {}).get(side, "none")


def _unordered_note(step: Step, rank: int) -> str:
    """Why this message may be another one: its rank ran it with its channel-mates."""
    m = step.ranks[rank]
    others = m.get("unordered")
    if not others:
        return ""
    ops = " and ".join(f"#{n}" for n in sorted([m["seq"], *others]))
    return (
        f"order not defined: rank {rank} evaluated {m['op']} {ops} together, and MLX "
        "picks their order, so these messages may be swapped (checked mode refuses this)"
    )


class Trace:
    """The ops of one cell on every rank that ran it, merged into ordered steps."""

    def __init__(self, reports: list[TraceReport]) -> None:
        self.reports = sorted(reports, key=lambda r: r["rank"])
        self.ranks = [r["rank"] for r in self.reports]
        #: rank -> hostname, as each rank said (absent from older reports)
        self.hosts = {r["rank"]: r["host"] for r in self.reports if r.get("host")}
        self.nranks = max((r["size"] for r in self.reports), default=0)
        self.enabled = all(r.get("enabled", True) for r in self.reports)
        self.kept = any(r.get("kept", False) for r in self.reports)
        self.dropped = {r["rank"]: r.get("dropped", 0) for r in self.reports if r.get("dropped")}
        self.members = self._members()
        self.steps = self._steps()
        self._transfers()
        self.steps = pair_transfers(self.steps)
        for s in self.steps:
            if s.op in COLLECTIVES:
                s.expected = expected(s)
                s.inputs_note = inputs_note(s)
            if s.expected is not None:
                s.mismatch = s.expected.wrong
            elif s.op in AGREEING:
                s.mismatch = disagreeing(s)
        #: collectives ranks ran in different orders, one per group (see run_order)
        self.swaps = run_order(self.steps)

    # -- merging --------------------------------------------------------------

    def _members(self) -> dict[str, list[int]]:
        """label -> world ranks in group order, from every rank's memberships."""
        members: dict[str, list[int]] = {}
        for rep in self.reports:
            for label, ranks in rep.get("groups", {}).items():
                members.setdefault(label, list(ranks))
        return members

    def _steps(self) -> list[Step]:
        steps: dict[tuple[Any, ...], Step] = {}
        order: dict[int, list[tuple[Any, ...]]] = {}
        first: dict[tuple[Any, ...], tuple[int, int]] = {}
        for rep in self.reports:
            rank, counts = rep["rank"], defaultdict(int)
            keys = []
            for pos, m in enumerate(sorted(rep["ops"], key=lambda m: m["seq"])):
                if m["op"] in COLLECTIVES:
                    base: tuple[Any, ...] = ("c", m["group"])
                else:
                    # the same source line on every rank (cell file names differ by rank)
                    site = m.get("site") or {}
                    code = (site.get("code") or "").strip()
                    base = ("p", m["op"], m["group"], site.get("line"), code)
                key = (*base, counts[base])
                counts[base] += 1
                if key not in steps:
                    members = self.members.get(m["group"], [])
                    steps[key] = Step(0, m["op"], m["group"], members)
                steps[key].ranks[rank] = m
                first[key] = min(first.get(key, (pos, rank)), (pos, rank))
                keys.append(key)
            order[rank] = keys
        ordered = _topological(list(steps), order, first)
        out = [steps[k] for k in ordered]
        for i, s in enumerate(out, start=1):
            s.index = i
        return out

    def _world(self, group: str, grank: int | None) -> int | None:
        members = self.members.get(group, [])
        if grank is None or not 0 <= grank < len(members):
            return None
        return members[grank]

    def _transfers(self) -> None:
        sends: dict[tuple[str, int | None, int | None], list[tuple[Step, int]]] = defaultdict(list)
        recvs: dict[tuple[str, int | None, int | None], list[tuple[Step, int]]] = defaultdict(list)
        for s in self.steps:
            for rank, m in s.ranks.items():
                peer = self._world(s.group, m.get("peer"))
                if m["op"] == "send":
                    sends[(s.group, rank, peer)].append((s, rank))
                elif m["op"] in ("recv", "recv_like"):
                    recvs[(s.group, peer, rank)].append((s, rank))
        for key in sorted(set(sends) | set(recvs), key=str):
            group, src, dst = key
            ss, rs = sends.get(key, []), recvs.get(key, [])
            for i in range(max(len(ss), len(rs))):
                t = Transfer(src, dst, group)
                steps = []
                if i < len(ss):
                    step, r = ss[i]
                    t.send = (r, step.ranks[r]["seq"])
                    steps.append(step)
                if i < len(rs):
                    step, r = rs[i]
                    t.recv = (r, step.ranks[r]["seq"])
                    steps.append(step)
                t.what, t.note = self._transfer_text(t, ss[i] if i < len(ss) else None, rs, i)
                for step in dict.fromkeys(steps):
                    step.transfers.append(t)

    def _transfer_text(
        self, t: Transfer, send: tuple[Step, int] | None, rs: list[tuple[Step, int]], i: int
    ) -> tuple[str, str]:
        sent = send[0].ranks[send[1]].get("in") if send else None
        got = rs[i][0].ranks[rs[i][1]].get("out") if i < len(rs) else None
        info = sent or got or {}
        what = f"{info.get('dtype', '?')} {shape_text(info.get('shape', []))}" if info else ""
        note = ""
        if t.recv is None:
            note = f"no matching recv on rank {t.dst} in this cell"
        elif t.send is None:
            note = f"no matching send from rank {t.src} in this cell"
        elif sent and got and (sent["dtype"], sent["shape"]) != (got["dtype"], got["shape"]):
            a = f"{sent['dtype']} {shape_text(sent['shape'])}"
            b = f"{got['dtype']} {shape_text(got['shape'])}"
            ends = [step.ranks[r] for step, r in [send, rs[i]]]
            if any(m.get("eval_note") == "refused" for m in ends):  # nothing moved
                note = f"sends {a}, the recv expects {b}: mxnb's check stopped both"
            else:
                note = f"sent {a} but received {b}"
        else:
            sides = [send] if send else []
            sides += [rs[i]] if i < len(rs) else []
            note = next((n for step, r in sides if (n := _unordered_note(step, r))), "")
        return what, note

    # -- reading --------------------------------------------------------------

    def value(self, step: int, rank: int, side: str = "after") -> np.ndarray | None:
        """The values shown for ``rank`` in step ``step`` (1-based): exact or block means."""
        snap, state = self.steps[step - 1].snap(rank, side)
        return decode(snap) if state == "ok" and snap is not None else None

    def ring(self, step: int) -> RingReplay:
        """The textbook ring algorithm replayed on step ``step`` (1-based); see
        :mod:`mxnb.trace.ring`.  ``print(trace.ring(1).text())`` reads it round by round."""
        from mxnb.trace.ring import replay

        s = self.steps[step - 1]
        found = replay(s)
        if found is None:
            why = (
                "its inputs were not all recorded exactly (at most 4096 elements each)"
                if s.op in ("all_sum", "all_gather")
                else "the replay covers all_sum and all_gather"
            )
            raise ValueError(f"no ring replay for step {step} ({s.op}): {why}")
        return found

    def __len__(self) -> int:
        return len(self.steps)

    def text(self) -> str:
        """The plain-text summary, as :mod:`mxnb.trace.view` words every view of it."""
        from mxnb.trace.view import trace_view

        return trace_view(self).text()

    def __repr__(self) -> str:
        return self.text()


def _topological(
    keys: list[tuple[Any, ...]],
    order: dict[int, list[tuple[Any, ...]]],
    first: dict[tuple[Any, ...], tuple[int, int]],
) -> list[tuple[Any, ...]]:
    """Steps in an order consistent with each rank's calls (ties: earliest call)."""
    after: dict[tuple[Any, ...], set[tuple[Any, ...]]] = defaultdict(set)
    before_count = dict.fromkeys(keys, 0)
    for seq in order.values():
        for a, b in itertools.pairwise(seq):
            if a != b and b not in after[a]:
                after[a].add(b)
                before_count[b] += 1
    out: list[tuple[Any, ...]] = []
    left = set(keys)
    # ready steps by their earliest call (unique per step): a heap, not a scan per step
    ready = [(first[k], k) for k in keys if before_count[k] == 0]
    heapq.heapify(ready)
    while left:
        while ready and ready[0][1] not in left:
            heapq.heappop(ready)
        if ready:
            k = heapq.heappop(ready)[1]
        else:  # a cycle: break it at the earliest call left
            k = min(left, key=first.__getitem__)
        out.append(k)
        left.discard(k)
        for b in after[k]:
            before_count[b] -= 1
            if before_count[b] == 0 and b in left:
                heapq.heappush(ready, (first[b], b))
    return out
