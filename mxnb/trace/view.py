"""The trace as its views word it: one view-model for the summary, the widget and the picture.

:func:`trace_view` turns a merged :class:`~mxnb.trace.Trace` into what a
reader is shown: per op its header, its notes, its transfers, and per rank a
panel with the types, the values (snapshots) and the words for each side and
for the timing.  The text summary (:meth:`TraceView.text`), the widget's
state and the static picture all render this one object, so what they say
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mxnb.protocol.ops import AGREEING, COLLECTIVES
from mxnb.protocol.wording import hosts_text, ranks_text, shape_text
from mxnb.trace.provenance import Provenance, provenance
from mxnb.trace.text import ONE_REASON, count, describe_value, sent_text, timing_text
from mxnb.trace.timeline import (
    LANE_STATES,
    Fold,
    Timeline,
    column_head,
    op_name,
    timeline,
    worst,
)

if TYPE_CHECKING:
    from mxnb.protocol.messages import Snapshot
    from mxnb.trace.merge import Step, Trace, Transfer
    from mxnb.trace.ring import RingReplay

__all__ = ["PanelView", "SideView", "StepView", "TraceView", "TransferView", "trace_view"]

#: Exact values a side lists before it is summarised (min/max/mean).
VALUES_SHOWN = 8
#: Elements per rank up to which the ring step-through is part of the view.
RING_MAX = 64
SIDES = ("before", "after")


@dataclass(frozen=True)
class SideView:
    """One side (the input before, the result after) of one rank's op."""

    #: ok | lazy | in_flight | refused | traced | compiled | vmapped | limit | none | template
    #: | error | absent | converted (a Python or NumPy input, which MLX made into an array itself),
    #: or sent: a send's result, which is its own input (the message is elsewhere)
    state: str
    snap: Snapshot | None  # the values, only when state is "ok"
    text: str  # the values in words, or why there are none


ABSENT = SideView("absent", None, "(absent)")


@dataclass(frozen=True)
class PanelView:
    """One rank's part in one op."""

    rank: int
    op: str
    types: dict[str, dict[str, Any] | None]  # side -> {"dtype", "shape"} of in / out
    call_ms: float | None  # the Python call: building the lazy graph node (None: no call
    # of its own, the op ran inside a compiled function's graph)
    eval_ms: float | None  # the evaluation that moved the data, if timed
    time_text: str
    t_ms: float  # when it was called, since the cell started
    timed: bool  # False for an op never evaluated: no timing worth a line
    before: SideView
    after: SideView
    #: what the rank should hold, for a rank whose result is wrong (else None)
    expected: SideView | None = None

    def type_text(self, side: str) -> str:
        d = self.types[side]
        return f"{d['dtype']} {shape_text(d['shape'])}" if d else "-"

    def side(self, name: str) -> SideView:
        return self.before if name == "before" else self.after


@dataclass(frozen=True)
class TransferView:
    src: int | None
    dst: int | None
    matched: bool
    what: str
    note: str
    #: drawn in this step's timeline column: a message is drawn once, where it is
    #: received (where there is no recv, where it is sent)
    drawn: bool = True


@dataclass(frozen=True)
class StepView:
    """One op across the ranks that took part, as every view words it."""

    index: int
    op: str
    group: str
    group_text: str
    members: list[int]
    site_text: str
    agree: bool  # an op after which all members should hold the same result
    mismatch: list[int]
    mismatch_text: str
    inputs_note: str
    #: collectives of this group the ranks ran in different orders (empty: none)
    order_note: str
    transfers: list[TransferView]
    panels: dict[int, PanelView]  # rank -> panel, for the ranks that took part
    lanes: dict[int, str] = field(default_factory=dict)  # rank -> lane state (timeline)
    provenance: Provenance | None = None
    ring: RingReplay | None = None  # for small exact all_sum / all_gather inputs
    #: the collectives the ranks called here, in rank order (more than one: a mistake)
    called: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return worst(list(self.lanes.values()))

    def absence(self, rank: int) -> str:
        """Why ``rank`` has no row here, as a key of ``ABSENT_TEXT``: outside the
        group, a member that never called this collective, or no end of a transfer."""
        if rank not in self.members:
            return "outside"
        return "missing" if self.op in COLLECTIVES else "apart"

    @property
    def name(self) -> str:
        """The op as titles name it: both ops where the ranks called different ones."""
        return op_name(self.called or [self.op])

    @property
    def head(self) -> str:
        """The op as its timeline column names it."""
        return column_head(self.called or [self.op])

    def snap(self, rank: int, side: str) -> tuple[Snapshot | None, str]:
        """(values, state) of one side of one rank; ``absent`` if it took no part."""
        p = self.panels.get(rank)
        s = ABSENT if p is None else p.side(side)
        return s.snap, s.state


@dataclass(frozen=True)
class TraceView:
    ranks: list[int]  # every rank of the world, one lane each
    reported: list[int]  # the ranks that ran the cell
    enabled: bool
    headline: str
    steps: list[StepView]
    notes: list[str] = field(default_factory=list)  # what was not recorded
    timeline: Timeline = field(default_factory=lambda: Timeline([], []))
    #: rank -> host, when the ranks ran on more than one host (else empty)
    hosts: dict[int, str] = field(default_factory=dict)

    def text(self, limit: int | None = None) -> str:
        """The plain-text summary: the widget's and the picture's ``text/plain`` fallback.

        A loop's repeats are folded as the timeline folds them: its first
        iteration is written out, then how many more times it ran.  ``limit``
        caps the timeline columns written (a notebook output stays readable).
        """
        lines = [self.headline]
        if not self.reported or not self.enabled:
            return self.headline
        if not self.steps:
            lines.append("(this cell called no mx.distributed operation)")
        tl = self.timeline
        shown = tl.shown()
        for n, (c, f) in enumerate(shown):
            if limit is not None and n == limit:
                left = len(self.steps) - tl.columns[c].steps[0]
                lines.append(f"... and {count(left, 'more op')} from #{self.steps[-left].index} on")
                break
            for k in tl.columns[c].steps:
                lines += self._step_lines(self.steps[k])
            if f is not None and c == f.first + f.period - 1:
                lines.append(self._fold_line(f))
        return "\n".join(lines + self.notes)

    def _fold_line(self, f: Fold) -> str:
        cols = self.timeline.columns
        first = self.steps[cols[f.first + f.period].steps[0]].index
        last = self.steps[cols[f.end - 1].steps[-1]].index
        state = worst([cols[f.first + k].state for k in range(f.period)])
        return (
            f"... the same {count(f.period, 'op')} ran {count(f.times - 1, 'more time')} "
            f"(#{first}-#{last}), each time: {LANE_STATES[state]}"
        )

    def _step_lines(self, s: StepView) -> list[str]:
        lines = [f"#{s.index} {s.name} on {s.group_text}, {s.site_text}"]
        for t in s.transfers:
            arrow = f"  rank {t.src} -> rank {t.dst}: {t.what}"
            lines.append(arrow + (f"  !! {t.note}" if t.note else ""))
        for r, p in sorted(s.panels.items()):
            types = f"{p.type_text('before')} -> {p.type_text('after')}"
            timing = f" | {p.time_text}" if p.timed else ""
            want = f" (expected {p.expected.text})" if p.expected else ""
            values = f"{p.before.text} -> {p.after.text}"
            if p.before.state == p.after.state in ONE_REASON:  # said once for both sides
                values = p.after.text
            lines.append(f"  rank {r}: {types}: {values}{want}{timing}")
        if s.inputs_note:
            lines.append(f"  !! {s.inputs_note}")
        if s.mismatch:
            lines.append(f"  !! {s.mismatch_text}")
        if s.order_note:
            lines.append(f"  !! {s.order_note}")
        return lines


def _panel(step: Step, rank: int) -> PanelView:
    m = step.ranks[rank]
    sides = {}
    for side in SIDES:
        snap, state = step.snap(rank, side)
        ok = state == "ok" and snap is not None
        text = describe_value(snap, state, VALUES_SHOWN)
        sides[side] = SideView(state, snap if ok else None, text)
    if m["op"] == "send" and (sides["after"].state == "ok" or m.get("eval_s") is not None):
        t = next((t for t in step.transfers if t.src == rank), None)
        said = sent_text(t.dst, t.matched) if t else sent_text(None, False)
        sides["after"] = SideView("sent", None, said)
    return PanelView(
        rank=rank,
        op=m["op"],
        types={"before": m.get("in"), "after": m.get("out")},
        call_ms=None if m["call_s"] is None else round(m["call_s"] * 1e3, 4),
        eval_ms=None if m.get("eval_s") is None else round(m["eval_s"] * 1e3, 4),
        time_text=timing_text(m),
        t_ms=round(m["t"] * 1e3, 3),
        timed=m.get("eval_note") != "lazy",
        before=sides["before"],
        after=sides["after"],
        expected=_expected(step, rank),
    )


def _expected(step: Step, rank: int) -> SideView | None:
    if step.expected is None or rank not in step.mismatch:
        return None
    want = step.expected.values[rank]
    snap = step.expected.snapshot(rank, str(want.dtype))
    return SideView("ok", snap, describe_value(snap, "ok", VALUES_SHOWN))


def _step(step: Step) -> StepView:
    return StepView(
        index=step.index,
        op=step.op,
        group=step.group,
        group_text=step.group_text(),
        members=list(step.members),
        site_text=step.site_text(),
        agree=step.op in AGREEING,
        mismatch=list(step.mismatch),
        mismatch_text=step.mismatch_text(),
        inputs_note=step.inputs_note,
        order_note=step.order_note,
        transfers=[
            TransferView(t.src, t.dst, t.matched, t.what, t.note, _received_here(step, t))
            for t in step.transfers
        ],
        panels={r: _panel(step, r) for r in sorted(step.ranks)},
        lanes=_lanes(step),
        provenance=provenance(step),
        ring=_ring(step),
        called=_called(step),
    )


def _called(step: Step) -> list[str]:
    """The collectives the ranks called at this step, first caller's first; a
    transfer's sides (send, recv) are one op and not listed."""
    if step.op not in COLLECTIVES:
        return []
    return list(dict.fromkeys(step.ranks[r]["op"] for r in sorted(step.ranks)))


def _received_here(step: Step, t: Transfer) -> bool:
    """Whether ``step`` is where the timeline draws ``t``: its recv's step, else its send's."""
    if t.recv is None or step.op.startswith("send/"):  # an exchange holds both ends
        return True
    rank, seq = t.recv
    return rank in step.ranks and step.ranks[rank]["seq"] == seq


def _lanes(step: Step) -> dict[int, str]:
    """Each taking-part rank's state in this op, as the timeline colours it."""
    if step.op in COLLECTIVES:
        ranks = set(step.members)
    else:  # its own ranks, and the missing end of a message that has one
        ranks = set(step.ranks)
        ranks |= {t.dst for t in step.transfers if t.recv is None}
        ranks |= {t.src for t in step.transfers if t.send is None}
    bad = {r for t in step.transfers if t.note for r in (t.src, t.dst)}
    out = {}
    for r in sorted(x for x in ranks if x is not None):
        after = step.snap(r, "after")[1]
        if r not in step.ranks:
            out[r] = "missing"
        elif after == "in_flight":
            out[r] = "in_flight"
        elif after == "refused":  # mxnb's check found the ranks disagree: nothing ran
            out[r] = "mismatched"
        elif r in step.mismatch:
            out[r] = "wrong" if step.expected is not None else "disagree"
        elif step.inputs_note or step.order_note or r in bad:
            out[r] = "mismatched"
        elif after == "lazy":
            out[r] = "lazy"
        else:
            out[r] = "ok"
    return out


def _ring(step: Step) -> RingReplay | None:
    from mxnb.trace.ring import replay

    m = next(iter(step.ranks.values()), None)
    shape = (m or {}).get("in", {}) or {}
    if int(np.prod(shape.get("shape", [RING_MAX + 1]))) > RING_MAX:
        return None
    return replay(step)


#: Said wherever a trace held values that MLX would otherwise have reused.
KEPT_NOTE = (
    "(--viz kept every op's input and output to show them: MLX could not reuse those "
    "buffers, so this cell's peak memory can be higher than without --viz)"
)


def trace_view(trace: Trace) -> TraceView:
    """What every view of ``trace`` shows."""
    if not trace.reports:
        headline = "mxnb trace: no ranks reported"
    elif not trace.enabled:
        headline = "mxnb trace: recording was off for this cell (--no-trace)"
    else:
        n = len(trace.steps)
        headline = f"mxnb trace: {n} op{'s' if n != 1 else ''} on {ranks_text(trace.ranks)}"
    hosts = trace.hosts if len(set(trace.hosts.values())) > 1 else {}
    if hosts and trace.enabled:
        headline += f", on {len(set(hosts.values()))} hosts: {hosts_text(hosts)}"
    steps = [_step(s) for s in trace.steps]
    return TraceView(
        ranks=list(range(trace.nranks)) or list(trace.ranks),
        reported=list(trace.ranks),
        enabled=trace.enabled,
        headline=headline,
        steps=steps,
        timeline=timeline(steps),
        notes=[
            f"(rank {r}: {n} more ops not recorded: trace limit)" for r, n in trace.dropped.items()
        ]
        + ([KEPT_NOTE] if trace.kept else []),
        hosts=hosts,
    )
