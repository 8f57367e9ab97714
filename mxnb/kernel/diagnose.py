"""Explain a cell that cannot finish: where each rank is, and the likely cause.

Input is what the ranks' probes reported (see :mod:`mxnb.rank.probe_server`) plus
which ranks finished or failed.  Output is a per-rank report and, when the
evidence is definite, one sentence naming the cause.  Everything here is pure
so that each rule is tested without a cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mxnb.kernel.waitfor import allowance, wait_cycle
from mxnb.protocol.messages import OpState
from mxnb.protocol.ops import COLLECTIVES, POINT_TO_POINT
from mxnb.protocol.wording import op_text, rank_on, ranks_text, typed_text

__all__ = ["Diagnosis", "collective_count", "diagnose", "kth_collective", "waiting_op"]

#: Ops a blocked rank's report lists; a longer list is cut with "and n more".
MAX_LISTED = 4


@dataclass
class Diagnosis:
    """Per-rank lines, and the cause when the evidence is definite."""

    lines: list[str] = field(default_factory=list)
    cause: str | None = None
    stuck: list[int] = field(default_factory=list)  # ranks that wait on peers
    #: the probe answers and rank states it was made from (for the hang picture)
    states: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    now: float = 0.0  # when the probes answered (time.time())

    def text(self) -> str:
        out = list(self.lines)
        if self.cause:
            out.append(f"Likely cause: {self.cause}")
        return "\n".join(out)


def _op_text(op: OpState) -> str:
    return op_text(op["op"], op["seq"], op["peer"], op["dtype"], op["shape"])


def waiting_op(state: dict[str, Any]) -> dict[str, Any] | None:
    """The op a rank waits on: the one in its check, else its first unfinished op."""
    ops = state.get("ops") or []
    waiting = state.get("waiting")
    if waiting:
        for op in ops:
            if op["seq"] == waiting["seq"]:
                return op
    in_eval = state.get("in_eval")
    if in_eval:
        needed = [op for op in ops if op["seq"] in in_eval.get("ops", [])]
        if needed:
            return needed[0]
    return None


def _needed_text(state: dict[str, Any], first: OpState) -> str:
    """The ops a blocked evaluation needs: all its point-to-point ops, else its first op."""
    needs = set((state.get("in_eval") or {}).get("ops", []))
    p2p = [o for o in state.get("ops") or [] if o["seq"] in needs and o["op"] in POINT_TO_POINT]
    if len(p2p) < 2:
        return f"{_op_text(first)} on {first['group']} (called at {first['site']})"
    lines = [f"\n    {_op_text(o)}, called at {o['site']}" for o in p2p[:MAX_LISTED]]
    if len(p2p) > MAX_LISTED:
        lines.append(f"\n    and {len(p2p) - MAX_LISTED} more")
    return f"on {first['group']}:" + "".join(lines)


def _describe_rank(rank: int, state: dict[str, Any] | None, status: str, host: str = "") -> str:
    """One rank's line; ``host`` given when the ranks span hosts ("rank 3 on node2: ...")."""
    me = rank_on(rank, host)
    if status == "failed":
        return f"{me}: raised an exception (traceback above)"
    if state is None:
        return f"{me}: not answering (its process may be gone)"
    ops = state.get("ops") or []
    if status == "done":
        unevaluated = [op for op in ops if op["op"] == "send" and not op["evaluated"]]
        extra = ""
        if unevaluated:
            extra = "; never evaluated: " + ", ".join(_op_text(op) for op in unevaluated)
        return f"{me}: finished the cell{extra}"
    waiting = state.get("waiting")
    op = waiting_op(state)
    if waiting and op:
        return (
            f"{me}: waiting for {waiting['waits_for']} in {_op_text(op)} on {op['group']}, "
            f"at {op['site'] or waiting['site']}"
        )
    if state.get("in_eval") and op:
        where = state["in_eval"].get("site") or state.get("line") or "?"
        return (
            f"{me}: blocked in {state['in_eval']['entry']} at {where}, "
            f"which needs {_needed_text(state, op)}"
        )
    return f"{me}: running {state.get('line') or 'Python code'}"


def collective_count(ops: list[dict[str, Any]], group: str, upto_seq: int | None = None) -> int:
    """How many collectives on ``group`` a rank called (up to op ``upto_seq``):
    op #k of a rank is its group's collective number ``collective_count(.., k)``."""
    return sum(
        1
        for op in ops
        if op["op"] in COLLECTIVES and op["group"] == group
        and (upto_seq is None or op["seq"] <= upto_seq)
    )  # fmt: skip


def _peer_raised(rank: int, op: dict[str, Any], status: dict[int, str]) -> str | None:
    if status[op["peer"]] != "failed":
        return None
    return (
        f"rank {rank} waits in {_op_text(op)}, but rank {op['peer']} raised an exception "
        "(above) before its side of it ran."
    )


def _cause(
    rank: int,
    op: dict[str, Any],
    states: dict[int, dict[str, Any] | None],
    status: dict[int, str],
) -> str | None:
    """A definite reason why ``rank`` cannot finish ``op``, if the others show one."""
    gone = {r for r, s in status.items() if s in ("done", "failed")}
    how = {r: ("raised an exception" if status[r] == "failed" else "finished the cell")
           for r in gone}  # fmt: skip
    if op["op"] in ("send", "recv"):
        peer = op["peer"]
        if peer == rank:
            return _self_wait(rank, op, states)
        if peer not in gone:
            return None
        peer_ops = (states.get(peer) or {}).get("ops") or []
        if op["op"] == "recv":
            sends = [p for p in peer_ops if p["op"] == "send" and p["peer"] == rank]
            unevaluated = [p for p in sends if not p["evaluated"]]
            if unevaluated and status[peer] == "done":
                return (
                    f"rank {peer} finished the cell without evaluating its "
                    f"send #{unevaluated[0]['seq']} to rank {rank}."
                )
            if not sends:
                return (
                    f"rank {rank} waits in recv #{op['seq']} from rank {peer}, but rank "
                    f"{peer} {how[peer]} without sending to rank {rank}."
                )
            return _peer_raised(rank, op, status)
        recvs = [p for p in peer_ops if p["op"] == "recv" and p["peer"] == rank]
        if not recvs:
            return (
                f"rank {rank} waits in send #{op['seq']} to rank {peer}, but rank {peer} "
                f"{how[peer]} without a recv from rank {rank}."
            )
        return _peer_raised(rank, op, status)
    mine = collective_count((states.get(rank) or {}).get("ops") or [], op["group"], op["seq"])
    missing, unrun = [], []
    for member in op["group_ranks"]:
        if member in gone:
            member_ops = (states.get(member) or {}).get("ops") or []
            if collective_count(member_ops, op["group"]) < mine or status[member] == "failed":
                missing.append(member)
                continue
            # Had it run its k-th collective, this rank's would have completed
            # (MPI and mxnb's check pair them in order): so it did not
            kth = kth_collective(member_ops, op["group"], mine)
            if kth is not None and not kth["evaluated"]:
                unrun.append((member, kth))
    if not missing and unrun:
        return _never_evaluated(rank, op, mine, unrun)
    if not missing:
        return None
    who = ", ".join(map(str, missing))
    verbs = {how[m] for m in missing}
    verb = verbs.pop() if len(verbs) == 1 else "finished or failed"
    return (
        f"rank{'s' if len(missing) > 1 else ''} {who} {verb} without calling "
        f"{op['op']} (collective #{mine} on {op['group']}) that rank {rank} waits in; "
        "every rank of a group must reach each collective."
    )


def kth_collective(ops: list[dict[str, Any]], group: str, k: int) -> dict[str, Any] | None:
    found = [op for op in ops if op["op"] in COLLECTIVES and op["group"] == group]
    return found[k - 1] if len(found) >= k else None


def _never_evaluated(
    rank: int, op: dict[str, Any], k: int, unrun: list[tuple[int, dict[str, Any]]]
) -> str:
    """Members that called the collective and finished without evaluating it:
    MLX never ran the op there, whatever became of their half of mxnb's check."""
    if len(unrun) == 1:
        member, theirs = unrun[0]
        name = f"{theirs['op']} #{theirs['seq']}"
        who = f"rank {member} finished the cell without evaluating its {name}"
    else:
        who = (f"ranks {', '.join(str(m) for m, _ in unrun)} finished the cell without "
               f"evaluating their {unrun[0][1]['op']}")  # fmt: skip
    return (
        f"{who} (collective #{k} on {op['group']}) that rank {rank} waits in: MLX runs an "
        "op only when an evaluation needs its result, and a collective only when every rank "
        "of the group runs it. Evaluate it on every rank (mx.eval)."
    )


def _self_wait(
    rank: int, op: dict[str, Any], states: dict[int, dict[str, Any] | None]
) -> str | None:
    """A rank that waits to receive from itself (or to send to itself) with no
    op of its own that could be the other end: nobody else can be rank ``rank``."""
    other, way = ("send", "to") if op["op"] == "recv" else ("recv", "from")
    ops = (states.get(rank) or {}).get("ops") or []
    if any(p["op"] == other and p["peer"] == rank for p in ops):
        return None  # it may be the other end, on another stream
    said = "from" if op["op"] == "recv" else "to"
    fix = ("src is the rank that sends the message, e.g. (rank - 1) % size"
           if op["op"] == "recv" else
           "dst is the rank that receives the message, e.g. (rank + 1) % size")  # fmt: skip
    return (
        f"rank {rank} waits in {op['op']} #{op['seq']} {said} rank {rank}, itself, and "
        f"calls no {other} {way} itself, so no rank can be the other end: {fix}."
    )


def _collectives_differ(
    waits: dict[int, dict[str, Any]], states: dict[int, dict[str, Any] | None]
) -> str | None:
    """Every member of a group waits in its k-th collective on it, not all in the same one.

    ``waits``: the op each running rank waits in, as :func:`diagnose` found it.
    Unchecked (``--no-check``) this is what an op or shape mismatch looks like:
    MPI cannot pair the calls, so every rank waits.  Said only as a hint (after
    a timeout or an interrupt): which op a rank waits in is read from the first
    op its evaluation needs.
    """
    at: dict[tuple[str, int], dict[str, list[int]]] = {}
    members: dict[str, list[int]] = {}
    for rank, op in sorted(waits.items()):
        if op["op"] not in COLLECTIVES:
            continue
        k = collective_count((states.get(rank) or {}).get("ops") or [], op["group"], op["seq"])
        kind = f"{op['op']} of {typed_text(op['dtype'], op['shape'])}"
        at.setdefault((op["group"], k), {}).setdefault(kind, []).append(rank)
        members[op["group"]] = sorted(op["group_ranks"])
    for (group, k), kinds in at.items():
        if len(kinds) > 1 and sorted(r for rs in kinds.values() for r in rs) == members[group]:
            sides = "; ".join(f"{ranks_text(rs)} in {kind}" for kind, rs in kinds.items())
            return (
                f"the ranks of {group} wait in different calls of collective #{k}: {sides}. "
                "Every rank of a group must call the same collectives, with the same shape "
                "and dtype, in the same order (checked mode, the default, stops this "
                "before MLX runs it)."
            )
    return None


def _run_out_of_order(
    waits: dict[int, dict[str, Any]],
    states: dict[int, dict[str, Any] | None],
    status: dict[int, str],
    now: float,
    grace: float,
) -> str | None:
    """A rank runs a group's collectives in another order than it called them,
    and waits in one for ``grace`` seconds while another member runs a
    different one or has finished the cell.

    MPI pairs a group's collectives in the order each rank runs them, so it
    paired different collectives (the checks compare the calls, which
    agreed): of different sizes, the ranks wait for each other forever, or
    MPI writes past a buffer.  A rank that runs ahead briefly, as the last to
    leave a collective the others left, does not stay for ``grace`` (plus the
    time its data takes at the slowest rate, as for any transfer).
    """
    blocked: dict[int, tuple[dict[str, Any], int]] = {}
    for rank, op in waits.items():
        state = states.get(rank) or {}
        busy = state.get("in_eval") or state.get("waiting")
        if op["op"] not in COLLECTIVES or not busy or now - busy["since"] < allowance([op], grace):
            continue
        blocked[rank] = (op, collective_count(state.get("ops") or [], op["group"], op["seq"]))
    for r, (op, k) in sorted(blocked.items()):
        state = states.get(r) or {}
        needs = set((state.get("in_eval") or {}).get("ops") or [op["seq"]])
        mine = [o for o in state.get("ops") or [] if o["op"] in COLLECTIVES
                and o["group"] == op["group"] and o["seq"] not in needs]  # fmt: skip
        unrun = [o for o in mine if o["seq"] < op["seq"] and not o["evaluated"]]
        ahead = [o for o in mine if o["seq"] > op["seq"] and o["evaluated"]]
        if unrun:
            earlier = _op_text(unrun[0])
            how = f"rank {r} runs {_op_text(op)} before its {earlier}, which it has not run"
        elif ahead:
            how = f"rank {r} runs {_op_text(op)} after its {_op_text(ahead[0])}"
        else:
            continue
        others = [f"rank {q} runs {_op_text(o)}" for q, (o, j) in sorted(blocked.items())
                  if q != r and o["group"] == op["group"] and j != k]  # fmt: skip
        others += [f"rank {q} finished the cell" for q in op["group_ranks"]
                   if status.get(q) == "done"]  # fmt: skip
        if others:
            return (
                f"{how}, while {others[0]}: MPI pairs a group's collectives in the order each "
                f"rank runs them, so it paired different collectives on {op['group']}, and "
                "they cannot finish. Evaluate them in the same order on every rank."
            )
    return None


def diagnose(
    states: dict[int, dict[str, Any] | None],
    status: dict[int, str],
    now: float | None = None,
    grace: float = 1.5,
    hints: bool = False,
    hosts: dict[int, str] | None = None,
) -> Diagnosis:
    """``status`` per rank: "done", "failed" or "running"; ``hosts``: rank -> host,
    given when the ranks span hosts, so that each rank's line says where it runs.

    Without ``hints`` only definite causes are named (the watcher acts on
    them and may stop the job); with ``hints`` (after a timeout or an
    interrupt, when the user already gave up waiting) likely ones are too.
    """
    now = time.time() if now is None else now
    d = Diagnosis(states=dict(states), status=dict(status), now=now)
    for rank in sorted(status):
        d.lines.append(
            _describe_rank(rank, states.get(rank), status[rank], (hosts or {}).get(rank, ""))
        )
    running = [r for r in status if status[r] == "running"]
    checks: dict[int, dict[str, Any]] = {}
    waits: dict[int, dict[str, Any]] = {}
    for rank in running:
        state = states.get(rank)
        if not state:
            continue
        op = waiting_op(state)
        if op is None:
            continue
        d.stuck.append(rank)
        waits[rank] = op
        waiting = state.get("waiting")
        if waiting and now - waiting["since"] >= grace:
            checks[rank] = op
        cause = _cause(rank, op, states, status)
        if cause and d.cause is None:
            d.cause = cause
    if d.cause is None and running and len(checks) == len(running):
        # every running rank waits in a check for peers that also wait: deadlock
        parts = [f"rank {r} in {_op_text(op)} on {op['group']}" for r, op in sorted(checks.items())]
        d.cause = (
            "the ranks wait for each other and none can proceed: "
            + "; ".join(parts)
            + ". Every rank of a group must call the same collectives, and each "
            "recv needs a matching send, in the same order."
        )
    if d.cause is None:
        d.cause = _run_out_of_order(waits, states, status, now, 0.0 if hints else grace)
    if d.cause is None and hints:
        d.cause = _collectives_differ(waits, states)
    if d.cause is None:
        d.cause = wait_cycle(states, running, now, 0.0 if hints else grace)
    return d
