"""The textbook ring algorithm, step by step, on the ranks' own recorded data.

How does ``all_sum`` reach every rank?  The classic answer is a ring: each
rank's array is cut into ``size`` chunks; in ``size - 1`` reduce-scatter
steps every rank passes one chunk to its right neighbour, which adds it to
its own, until each rank holds one chunk of the total; in ``size - 1``
all-gather steps the finished chunks travel round the ring until every rank
holds all of them.  ``all_gather`` is the second half alone.

This replays that algorithm with NumPy on the inputs mxnb recorded.  It is
a teaching model, labelled as such: Open MPI picks its own algorithm (ring,
recursive doubling, a tree...) by message size and rank count, and does not
say which.  The replay's last step equals what the op should leave on every
rank (:mod:`mxnb.trace.expect`), which the tests check against the real
result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mxnb.protocol.snapshot import decode

if TYPE_CHECKING:
    from mxnb.trace.merge import Step

__all__ = ["HONESTY", "KEY", "RingPass", "RingReplay", "RingRound", "replay"]

#: Said with every replay: what it is, and what it is not.
HONESTY = "the textbook ring algorithm, replayed on the recorded inputs; Open MPI may use another"
#: How to read a drawing of the replay (the widget's ring mode and mxnb.ring_steps).
KEY = (
    "A dot per rank whose input the chunk already holds; "
    "a chunk just received is framed in its sender's colour."
)


@dataclass(frozen=True)
class RingPass:
    """One chunk going from a rank to its right neighbour in one round."""

    src: int  # world ranks
    dst: int
    chunk: int
    values: np.ndarray  # what travels
    combine: str  # "add" (reduce-scatter) or "copy" (all-gather)


@dataclass(frozen=True)
class RingRound:
    """One round: every rank sends one chunk, then each holds ``after``."""

    phase: str  # "reduce-scatter" or "all-gather"
    number: int  # 1-based within its phase
    passes: list[RingPass]
    after: dict[int, list[np.ndarray | None]]  # rank -> its chunks (None: not yet there)
    #: rank -> chunk -> the ranks whose input that chunk already holds, in order
    holders: dict[int, list[list[int]]] = field(default_factory=dict)

    def name(self, ranks: int) -> str:
        """``reduce-scatter round 2 of 3``, on a ring of ``ranks``."""
        return f"{self.phase} round {self.number} of {ranks - 1}"


@dataclass
class RingReplay:
    """The whole replay of one op."""

    op: str
    ranks: list[int]  # the ring, in group order
    start: dict[int, list[np.ndarray | None]]
    rounds: list[RingRound] = field(default_factory=list)
    #: before the first round: each chunk holds its own rank's input, or nothing yet
    start_holders: dict[int, list[list[int]]] = field(default_factory=dict)

    def result(self, rank: int) -> np.ndarray:
        """What ``rank`` holds after the last round, as one array."""
        last = self.rounds[-1].after if self.rounds else self.start
        return np.concatenate([c for c in last[rank] if c is not None])

    def titles(self) -> list[str]:
        """What each stage shows, the start first: one wording for the widget's ring
        mode, ``mxnb.ring_steps``' picture and this replay's text."""
        n = len(self.ranks)
        own = (
            f", cut into {n} chunks"
            if self.op == "all_sum"
            else " is the chunk with its own number"
        )
        out = [f"start: each rank's input{own}"]
        for rnd in self.rounds:
            verb = "adds it to its own" if rnd.phase == "reduce-scatter" else "keeps it"
            out.append(
                f"{rnd.name(n)}: every rank sends one chunk to its right neighbour, which {verb}"
            )
        return out

    def text(self) -> str:
        n = len(self.ranks)
        lines = [f"{self.op} on a ring of {n} ranks: {HONESTY}"]
        for rnd in self.rounds:
            lines.append(f"{rnd.name(n)}:")
            for p in rnd.passes:
                verb = "adds it to its own" if p.combine == "add" else "keeps it"
                lines.append(
                    f"  rank {p.src} -> rank {p.dst}: chunk {p.chunk} {_short(p.values)}; "
                    f"rank {p.dst} {verb}"
                )
        return "\n".join(lines)


def _short(v: np.ndarray) -> str:
    """``[0 3 6 9]``: numbers as the other views write them."""
    return np.array2string(
        v, max_line_width=60, threshold=8, edgeitems=3, separator=" ",
        formatter={"float_kind": "{:.6g}".format},
    )  # fmt: skip


def replay(step: Step) -> RingReplay | None:
    """The ring replay of an all_sum or all_gather step, if its inputs were recorded exactly."""
    if step.op not in ("all_sum", "all_gather") or step.expected is None:
        return None
    ranks = list(step.members)
    n = len(ranks)
    inputs = [decode(step.ranks[r]["before"]) for r in ranks]
    dtype = step.expected.values[ranks[0]].dtype
    if step.op == "all_sum":
        pieces = [np.array_split(x.astype(dtype).ravel(), n) for x in inputs]
        start: dict[int, list[np.ndarray | None]] = {
            r: [c.copy() for c in pieces[i]] for i, r in enumerate(ranks)
        }
    else:
        start = {r: [None] * n for r in ranks}
        for i, r in enumerate(ranks):
            start[r][i] = np.atleast_1d(inputs[i]).astype(dtype).ravel()
    out = RingReplay(step.op, ranks, start)
    out.start_holders = {r: [[] if c is None else [r] for c in start[r]] for r in ranks}
    held = {r: list(c) for r, c in start.items()}
    if step.op == "all_sum":
        _rounds(out, held, "reduce-scatter", offset=0)
        _rounds(out, held, "all-gather", offset=1)
    else:
        _rounds(out, held, "all-gather", offset=0)
    return out


def _rounds(
    out: RingReplay, held: dict[int, list[np.ndarray | None]], phase: str, offset: int
) -> None:
    """``size - 1`` rounds; in round k rank i sends chunk ``(i + offset - k) mod n``."""
    ranks, n = out.ranks, len(out.ranks)
    before = out.rounds[-1].holders if out.rounds else out.start_holders
    holders = {r: [set(h) for h in hs] for r, hs in before.items()}
    for k in range(n - 1):
        passes = []
        for i, r in enumerate(ranks):
            chunk = (i + offset - k) % n
            values = held[r][chunk]
            assert values is not None, "the ring schedule only sends chunks a rank holds"
            combine = "add" if phase == "reduce-scatter" else "copy"
            passes.append(RingPass(r, ranks[(i + 1) % n], chunk, values.copy(), combine))
        came = {(p.dst, p.chunk): set(holders[p.src][p.chunk]) for p in passes}
        for p in passes:  # all sends of a round happen together
            arrived, had = came[(p.dst, p.chunk)], holders[p.dst][p.chunk]
            holders[p.dst][p.chunk] = had | arrived if p.combine == "add" else arrived
            mine = held[p.dst][p.chunk]
            with np.errstate(over="ignore"):
                held[p.dst][p.chunk] = (
                    p.values if p.combine == "copy" or mine is None else mine + p.values
                )
        snapshot = {r: [None if c is None else c.copy() for c in cs] for r, cs in held.items()}
        who = {r: [sorted(h) for h in hs] for r, hs in holders.items()}
        out.rounds.append(RingRound(phase, k + 1, passes, snapshot, who))
