"""Sends and recvs paired into transfer steps, so that each message reads once.

The merge (:mod:`mxnb.trace.merge`) makes one step per call site and rank:
a send step and a recv step for one message.  Here the steps of the two ends
become one step with both panels and the arrow between them: a one-way
transfer, an exchange where every rank both sends and receives, and a root's
loop of sends (a scatter) or of recvs (a gather), one step per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxnb.protocol.messages import OpTrace
    from mxnb.trace.merge import Step

__all__ = ["pair_transfers"]


def pair_transfers(steps: list[Step]) -> list[Step]:
    """A send step and the recv step that takes all of its messages become one step.

    ``if rank == 0: send(...) else: recv(...)`` then reads as one transfer
    with both panels.  In an exchange (a ring shift: every rank sends, then
    every rank receives) each rank's row holds what it sent on the left and
    what it received on the right, so each message is drawn once.  Returns
    the steps left, numbered again.  Messages are looked up by identity in
    an index, so a loop of thousands of messages pairs in linear time.
    """
    ends: dict[int, dict[str, Step]] = {}  # id(transfer) -> {"send": step, "recv": step}
    for s in steps:
        for t in s.transfers:
            ends.setdefault(id(t), {})["send" if s.op == "send" else "recv"] = s
    merged: set[int] = set()
    for s in steps:
        if s.op != "send" or not s.transfers or not all(t.matched for t in s.transfers):
            continue
        recv_steps = {id(r): r for t in s.transfers if (r := ends[id(t)].get("recv"))}
        if len(recv_steps) != 1:
            continue
        (r,) = recv_steps.values()
        if r.op not in ("recv", "recv_like") or id(r) in merged:
            continue
        if not _all_in(r.transfers, s.transfers):
            continue
        both = set(r.ranks) & set(s.ranks)
        if both and both != set(r.ranks) | set(s.ranks):
            continue  # some ranks only send, others both: keep two steps
        for rank in both:
            s.ranks[rank] = _exchange(s.ranks[rank], r.ranks[rank])
        s.ranks.update({k: v for k, v in r.ranks.items() if k not in both})
        s.op = f"send/{r.op}"
        merged.add(id(r))
    merged |= _pair_fans(steps, merged, ends)
    if merged:
        steps = [s for s in steps if id(s) not in merged]
        for i, s in enumerate(steps, start=1):
            s.index = i
    return steps


def _all_in(these: list[Any], those: list[Any]) -> bool:
    """Whether every transfer of ``these`` is one of ``those`` (the same object)."""
    ids = {id(t) for t in those}
    return all(id(t) in ids for t in these)


def _pair_fans(steps: list[Step], merged: set[int], ends: dict[int, dict[str, Step]]) -> set[int]:
    """A root's loop of sends (or recvs) and the one step of its peers' recvs
    (or sends) become one transfer step per message.

    A scatter written as ``for r in ...: send(rows[r], r)`` on rank 0 and
    ``recv_like(...)`` on the others is three send steps (one per call) and
    one recv step (one call per rank).  The recv step is split among the
    sends: ``rank 0 -> rank 1``, ``rank 0 -> rank 2``, ... each with both
    ends.  A gather to a root (one send per rank, a loop of recvs) is split
    the other way.  Returns the steps emptied this way.
    """
    done: set[int] = set()
    for one in steps:
        if id(one) in merged or one.op not in ("send", "recv", "recv_like"):
            continue
        if not one.transfers or not all(t.matched for t in one.transfers):
            continue
        is_send = one.op == "send"
        far_end, kinds = ("recv", ("recv", "recv_like")) if is_send else ("send", ("send",))
        found = {id(s): s for t in one.transfers if (s := ends[id(t)].get(far_end))}
        many = [s for s in found.values()
                if id(s) not in merged and id(s) not in done and s.op in kinds]  # fmt: skip
        if len(many) < 2 or not all(_all_in(s.transfers, one.transfers) for s in many):
            continue
        # the ranks of ``one`` each at the far end of exactly one of ``many``
        far = [{(t.send if is_send else t.recv)[0] for t in s.transfers} for s in many]  # type: ignore[index]
        if sum(map(len, far)) != len(one.ranks) or set().union(*far) != set(one.ranks):
            continue
        if any(set(s.ranks) & set(one.ranks) for s in many):
            continue  # some ranks both send and receive: keep the steps
        for s, theirs in zip(many, far, strict=True):
            mine = {k: one.ranks[k] for k in sorted(theirs)}
            if is_send:  # the sender's end first, as in a 1:1 pair
                s.ranks = {**mine, **s.ranks}
                s.op = f"send/{s.op}"
            else:
                s.ranks.update(mine)
                s.op = f"send/{one.op}"
        done.add(id(one))
    return done


def _exchange(send: OpTrace, recv: OpTrace) -> OpTrace:
    """One rank's send and recv of an exchange as one record: what it sent, what it got.

    The time is the recv's evaluation (the send is usually in it); the call
    time is both calls.
    """
    m: dict[str, Any] = dict(recv)
    m["op"] = f"send/{recv['op']}"
    m["seq"], m["t"], m["site"] = send["seq"], send["t"], send.get("site")
    m["recv_site"] = recv.get("site")
    calls = (send["call_s"], recv["call_s"])  # None: run inside mx.compile, no call of its own
    m["call_s"] = None if None in calls else sum(calls)
    m["in"] = send.get("in")
    m["states"] = {**recv.get("states", {}), "before": send.get("states", {}).get("before", "none")}
    m.pop("before", None)
    if "before" in send:
        m["before"] = send["before"]
    return m  # type: ignore[return-value]
