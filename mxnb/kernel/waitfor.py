"""Ranks blocked inside MLX evaluations that wait on each other in a cycle.

Checked mode catches ranks that wait *before* data moves.  Once every check
has passed, a rank can still block inside MLX itself: MLX runs the ops of
one stream one after another, so a rank that evaluates a send and a recv on
one stream sits in one of them while its peer sits in the other.  No rank
is missing and no check failed, yet none can proceed.

Evidence, from the ranks' probe reports only: every rank of the cycle has
been inside one evaluation past the stall grace (plus the time its data
could take at a slow link), that evaluation needs point-to-point ops whose
peers are in the cycle, and each rank shows why it cannot go on: a send and
a recv on one stream, or a recv whose sender's running evaluation holds no
send to it.  Correct code that merely moves a lot of data shows neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mxnb.protocol.messages import OpState
from mxnb.protocol.ops import POINT_TO_POINT, nbytes
from mxnb.protocol.wording import op_text, ranks_text

__all__ = ["SLOWEST_RATE", "allowance", "blocked_ops", "cycles", "wait_cycle"]

#: Bytes per second no real transfer is slower than: an evaluation that moves
#: ``n`` bytes counts as stuck only after ``grace + n / SLOWEST_RATE`` seconds.
SLOWEST_RATE = 50e6


State = Mapping[str, Any]


def allowance(ops: Iterable[OpState], grace: float) -> float:
    """Seconds an evaluation moving ``ops`` may take before it counts as stuck."""
    if grace <= 0:
        return 0.0
    return grace + sum(nbytes(op["shape"], op["dtype"]) for op in ops) / SLOWEST_RATE


def blocked_ops(state: State | None, now: float, grace: float) -> list[OpState]:
    """The point-to-point ops of the evaluation a rank has been stuck in, or []."""
    if not state or state.get("waiting"):
        return []  # waiting in a check is another rule's business
    ev = state.get("in_eval")
    if not ev:
        return []
    by_seq = {op["seq"]: op for op in state.get("ops") or []}
    ops = [by_seq[s] for s in ev.get("ops", []) if s in by_seq]
    p2p = [op for op in ops if op["op"] in POINT_TO_POINT]
    if not p2p:
        return []
    return p2p if now - ev["since"] >= allowance(p2p, grace) else []


def cycles(edges: Mapping[int, Iterable[int]]) -> list[list[int]]:
    """Groups of two or more ranks that each reach every other (sorted, disjoint)."""
    reach: dict[int, set[int]] = {}
    for start in edges:
        seen: set[int] = set()
        todo = list(edges[start])
        while todo:
            r = todo.pop()
            if r in seen or r not in edges:
                continue
            seen.add(r)
            todo.extend(edges[r])
        reach[start] = seen
    found: list[list[int]] = []
    placed: set[int] = set()
    for r in sorted(edges):
        if r in placed or r not in reach[r]:
            continue
        group = sorted(s for s in reach[r] if r in reach[s])
        placed.update(group)
        if len(group) >= 2:
            found.append(group)
    return found


def _same_stream(ops: list[OpState]) -> bool:
    streams: dict[str, set[str]] = {}
    for op in ops:
        streams.setdefault(op.get("stream", ""), set()).add(op["op"])
    return any(kinds >= {"send", "recv"} for kinds in streams.values())


def _unsent(rank: int, ops: list[OpState], needs: Mapping[int, list[OpState]]) -> OpState | None:
    """A recv of ``rank`` whose sender's evaluation holds no send to ``rank``."""
    for op in ops:
        if op["op"] != "recv":
            continue
        theirs = needs.get(op["peer"], [])
        if not any(p["op"] == "send" and p["peer"] == rank for p in theirs):
            return op
    return None


def _text(op: OpState) -> str:
    return op_text(op["op"], op["seq"], op["peer"], op["dtype"], op["shape"])


def _explain(group: list[int], needs: Mapping[int, list[OpState]]) -> tuple[str, bool] | None:
    """Why the ranks of one cycle cannot go on, and whether it is the one-stream kind."""
    inside = {r: [op for op in needs[r] if op["peer"] in group] for r in group}
    streams = [r for r in group if _same_stream(inside[r])]
    unsent = {r: op for r in group if (op := _unsent(r, inside[r], needs)) is not None}
    if set(streams) | set(unsent) != set(group):
        return None  # a rank without evidence: maybe just a long transfer
    parts = []
    if streams:
        who = "each" if len(streams) == len(group) else ranks_text(streams)
        parts.append(
            f"{who} evaluates a send and a recv in one evaluation on one stream, "
            "where MLX runs them one after the other, so each rank sits in one while "
            "the op its peer needs is queued behind it"
        )
    for r, op in sorted(unsent.items()):
        if r not in streams:
            parts.append(
                f"rank {r} waits in {_text(op)}, but rank {op['peer']}'s running "
                f"evaluation holds no send to rank {r}"
            )
    return "; ".join(parts), bool(streams)


def wait_cycle(
    states: Mapping[int, State | None], running: Iterable[int], now: float, grace: float
) -> str | None:
    """The sentence naming the cycles of waits among ``running`` ranks, if any.

    Not while another rank has only just blocked in a transfer: it may be in a
    cycle of its own (the other pair of a pairwise exchange, a moment behind),
    and one report should name every cycle.
    """
    running = list(running)
    needs = {r: ops for r in running if (ops := blocked_ops(states.get(r), now, grace))}
    young = [r for r in running if r not in needs and blocked_ops(states.get(r), now, 0.0)]
    if young:
        return None
    edges = {r: {op["peer"] for op in ops if op["peer"] in needs} for r, ops in needs.items()}
    found = [(g, e) for g in cycles(edges) if (e := _explain(g, needs)) is not None]
    if not found:
        return None
    why = {e[0] for _, e in found}
    who = " and ".join(ranks_text(g) for g, _ in found)
    if len(why) == 1:  # the same story for every cycle: told once
        text = f"{who} wait on each other in {'a cycle' if len(found) == 1 else 'cycles'}: "
        text += why.pop()
    else:
        text = "; ".join(f"{ranks_text(g)} wait on each other in a cycle: {e[0]}" for g, e in found)
    if any(e[1] for _, e in found):
        fix = (
            "Give each recv its own stream: "
            "mx.distributed.recv_like(x, src, stream=mx.new_stream(mx.cpu))."
        )
    else:
        fix = (
            "Evaluate each send before a recv that waits on it, or evaluate both in "
            "one mx.eval with the recv on its own stream (stream=mx.new_stream(mx.cpu))."
        )
    return f"{text}. {fix}"
