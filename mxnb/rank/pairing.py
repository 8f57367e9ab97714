"""Point-to-point checks, paired the way MLX pairs the data: when evaluated.

MLX moves a send's data when the send is evaluated, and MPI matches it with
the receiver's recvs in the order they run.  So a send or recv posts its
checked-mode exchange when an evaluation is about to run it: the n-th send
from A to B that is evaluated pairs with the n-th recv of B from A that is
evaluated, as the data will.  A send that is created and never evaluated
posts nothing and puts no later pair out of step.

An evaluation runs an op either because its result was handed to it, or
because the result is an input of what was handed (``mx.eval(layer(recv))``).
The second kind is found by the op's primitive in MLX's graph
(:mod:`mxnb.rank.graph`), so no reference to a result is kept and MLX still
reuses its buffer as it would without mxnb.

Several sends to, or receives from, one peer on one group and stream in one
evaluation run in an order MLX picks; same-shaped messages could come back
swapped with no error.  Checked mode refuses that before any data moves
(:class:`~mxnb.errors.UndefinedOrder`); unchecked, the ops are marked.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mxnb.errors import CommMismatch, UndefinedOrder
from mxnb.protocol.ops import encode
from mxnb.rank import check, graph, hooks

if TYPE_CHECKING:
    from mxnb.rank.oprecord import OpRecord

__all__ = ["MAX_OPEN", "Pairing", "stream_name", "unordered"]

T = TypeVar("T")

#: Unevaluated point-to-point ops a rank follows; older ones are dropped.
MAX_OPEN = 4096
_LABELS = {op: graph.LABELS[op] for op in ("send", "recv")}  # MLX's names


def channel(rec: OpRecord) -> tuple[str, str, int | None, str | None]:
    """Ops on one channel reach the peer in the order they run."""
    return (rec.mirror.label, rec.op, rec.peer, rec.stream)


def unordered(items: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Groups of two or more ops of one evaluation on one channel, in the given order.

    ``key`` names an op's channel (group, direction, peer, stream): the op log
    reads it from its records, the recorder from its trace entries.
    """
    by: dict[Hashable, list[T]] = {}
    for item in items:
        by.setdefault(key(item), []).append(item)
    return [g for g in by.values() if len(g) > 1]


def order_problem(group: list[OpRecord]) -> str:
    """Why one channel's ops in one evaluation are refused, and how to write it."""
    first = group[0]
    seqs = [f"#{r.seq}" for r in group]
    ops = f"{first.op} " + (", ".join(seqs[:-1]) + " and " + seqs[-1])
    way = f"to rank {first.peer}" if first.op == "send" else f"from rank {first.peer}"
    where = "" if first.mirror.label == "world" else f" on {first.mirror.describe()}"
    lines = sorted({hooks.resolve(r.where).line for r in group if r.where is not None})
    at = ""
    if lines:
        at = f" (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))})"
    return (
        f"{ops} {way}{where}{at} are evaluated together: MLX runs them in an order of "
        "its choosing and MPI pairs messages by arrival, so the arrays could arrive "
        f"swapped with no error. Evaluate them one at a time, in the order the "
        f"{'receiver receives' if first.op == 'send' else 'sender sends'} them "
        "(mx.eval(a); mx.eval(b)). Run with --no-check to let it through."
    )


def stream_name(stream: Any) -> str | None:
    """``cpu stream 2``, or None for the default stream, however it was passed."""
    import mlx.core as mx

    if not isinstance(stream, mx.Stream):  # a device, or mx.cpu / mx.gpu
        stream = mx.default_stream(stream)
    if stream == mx.default_stream(mx.default_device()):
        return None
    m = re.fullmatch(r"Stream\(Device\((\w+), \d+\), (\d+)\)", repr(stream))
    return f"{m.group(1)} stream {m.group(2)}" if m else repr(stream)


@dataclass
class Pairing:
    """This rank's point-to-point ops from their call until an evaluation runs them."""

    #: primitive address -> record of an op not yet evaluated (newest per address);
    #: read by mxnb's op path in C on every call (mxnb.rank.fastpath): never replaced
    open: dict[int, OpRecord] = field(default_factory=dict)
    #: primitive address -> the op's result while the cell's code holds it
    refs: dict[int, weakref.ref[Any]] = field(default_factory=dict)
    #: (group, op, world peer) -> exchanges posted so far: the pairing number
    posted: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def follow(self, rec: OpRecord, result: Any) -> None:
        """Note an op's primitive, so an evaluation that runs it finds it."""
        prim = graph.own_primitive(result)
        if prim is None:
            rec.check = "off"  # MLX wrote no graph: the op cannot be followed
            return
        rec.prim = prim
        self.open.pop(prim, None)  # an address reused: the op there before was freed
        self.open[prim] = rec
        self.refs[prim] = weakref.ref(result)
        if len(self.open) > MAX_OPEN:
            self._drop(next(iter(self.open)))

    def _drop(self, prim: int) -> None:
        del self.open[prim]
        self.refs.pop(prim, None)

    def running(self, direct: Sequence[OpRecord], reading: graph.Reading) -> list[OpRecord]:
        """The followed ops this evaluation runs (``direct``: handed to it)."""
        found = {id(r): r for r in direct if r.prim is not None and self.open.get(r.prim) is r}
        if len(found) < len(self.open):
            prims = graph.primitives(reading, _LABELS.values()) or {}
            for prim, label in prims.items():
                rec = self.open.get(prim)
                if rec is not None and _LABELS[rec.op] == label:
                    found[id(rec)] = rec
        recs = sorted(found.values(), key=lambda r: r.seq)
        for rec in recs:
            assert rec.prim is not None
            self._drop(rec.prim)
            rec.evaluated = True
        return recs

    def check(self, recs: list[OpRecord], on_wait: Callable[[check.PendingCheck], None]) -> None:
        """Refuse an undefined order; post every exchange, then wait for each."""
        __tracebackhide__ = True
        for group in unordered(recs, channel):  # recs are in call order
            for rec in group:
                rec.check = "refused"
            raise UndefinedOrder(order_problem(group))
        for rec in recs:
            key = (rec.mirror.label, rec.op, rec.peer)
            n = self.posted[key] = self.posted.get(key, 0) + 1
            peer = rec.mirror.ranks.index(rec.peer)
            said = encode(rec.op, n, rec.shape, rec.dtype)
            rec.posted = check.post(rec.op, rec.seq, said, rec.mirror, peer)
        for i, rec in enumerate(recs):
            pc = rec.posted
            assert pc is not None
            try:
                check.wait(pc, on_wait=on_wait)
            except Exception as e:
                rec.check = "mismatch" if isinstance(e, CommMismatch) else "abandoned"
                for later in recs[i + 1 :]:
                    if later.posted is not None and not check.done(later.posted):
                        later.check = "abandoned"
                raise
            rec.check = "ok"
            rec.posted = None

    def end_cell(self) -> None:
        """Drop the ops whose result the cell let go.

        Later cells can no longer hand them to an evaluation.  One could still
        run as the input of an array the cell kept and evaluates later; it then
        posts no exchange (the price of not scanning every later graph for it).
        """
        for prim in [p for p, ref in self.refs.items() if ref() is None]:
            self._drop(prim)

    def forget(self) -> None:
        """Stop following every op (checked mode was switched off)."""
        self.open.clear()
        self.refs.clear()

    def reset(self) -> None:
        """After an abandoned exchange: ranks number their pairs afresh (with new mirrors)."""
        self.posted.clear()
