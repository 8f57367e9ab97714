"""The whole cell at a glance: ops in call order as columns across rank lanes.

A column is one op, or the same op at the same line on disjoint subgroups
(the two halves of a ``split`` summing at once read as one thing, with one
name).  Each rank's cell in a column has a *lane state*; a run of columns
that repeats exactly, states included, is folded into one with a count
(``x 50``), so a loop of a thousand ops stays one screen wide, and the one
iteration where a rank went wrong breaks out of the fold where it is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mxnb.trace.view import StepView

__all__ = [
    "LANE_STATES",
    "SHORT",
    "Column",
    "Fold",
    "Timeline",
    "column_head",
    "op_name",
    "timeline",
]

#: Lane states, worst first, with what each means to a reader.
LANE_STATES = {
    "in_flight": "in flight when the cell ended (where a hang or an interrupt stopped it)",
    "missing": "never called by this rank (it stopped or skipped it)",
    "wrong": "wrong result",
    "disagree": "results differ",
    "mismatched": "inputs differ, or a partner is missing or mismatched",
    "lazy": "not evaluated",
    "ok": "ok",
}
#: Op names short enough for a timeline column (widget and picture).
SHORT = {
    "all_sum": "sum", "all_gather": "gather", "all_max": "max", "all_min": "min",
    "sum_scatter": "scatter", "send": "send", "recv": "recv", "recv_like": "recv",
    "send/recv": "s->r", "send/recv_like": "s->r",
}  # fmt: skip


def op_name(called: list[str]) -> str:
    """An op as a title names it: ``all_sum``, or ``all_sum / all_gather`` when
    ranks called different collectives at the same point."""
    return " / ".join(called)


def column_head(called: list[str]) -> str:
    """An op as a timeline column names it: ``sum``, or ``sum/gather``."""
    return "/".join(SHORT.get(op, op) for op in called)


#: Longest repeating run looked for, in columns (a loop body of up to this many ops).
MAX_PERIOD = 8
#: Fewest repeats folded: two identical ops in a row are shown as they are.
MIN_TIMES = 3


def worst(states: list[str]) -> str:
    order = list(LANE_STATES)
    return min(states, key=order.index) if states else "ok"


@dataclass(frozen=True)
class Column:
    steps: tuple[int, ...]  # positions in TraceView.steps
    name: str  # "all_sum", "all_sum on 2 groups of split #1"
    site: str
    cells: tuple[tuple[int, str], ...]  # (rank, lane state), ranks in the op
    arrows: tuple[tuple[int, int, bool], ...]  # (src, dst, ok) of each transfer

    @property
    def state(self) -> str:
        return worst([s for _, s in self.cells])

    def same(self, other: Column) -> bool:
        """Whether ``other`` is a repeat of this column (as a loop would make it)."""
        return (self.name, self.site, self.cells, self.arrows) == (
            other.name,
            other.site,
            other.cells,
            other.arrows,
        )


@dataclass(frozen=True)
class Fold:
    """Columns ``first .. first + period - 1`` repeated ``times`` times in a row."""

    first: int
    period: int
    times: int

    @property
    def end(self) -> int:
        return self.first + self.period * self.times


@dataclass(frozen=True)
class Timeline:
    columns: list[Column]
    folds: list[Fold]

    def shown(self) -> list[tuple[int, Fold | None]]:
        """Columns as drawn: each fold's first iteration stands for all of it."""
        out: list[tuple[int, Fold | None]] = []
        folds = {f.first: f for f in self.folds}
        i = 0
        while i < len(self.columns):
            f = folds.get(i)
            if f is None:
                out.append((i, None))
                i += 1
            else:
                out.extend((f.first + k, f) for k in range(f.period))
                i = f.end
        return out


def _group_name(steps: list[StepView]) -> str:
    op = steps[0].op
    if len(steps) == 1:
        return op if steps[0].group == "world" else f"{op} on {steps[0].group}"
    parents = {s.group.split(" color")[0] for s in steps}
    where = parents.pop() if len(parents) == 1 else "subgroups"
    return f"{op} on {len(steps)} groups of {where}"


def _column(steps: list[StepView], positions: list[int]) -> Column:
    cells: dict[int, str] = {}
    for s in steps:
        cells.update(s.lanes)
    arrows = tuple(
        (t.src, t.dst, t.matched and not t.note)
        for s in steps
        for t in s.transfers
        if t.src is not None and t.dst is not None and t.drawn
    )
    return Column(
        tuple(positions),
        _group_name(steps),
        steps[0].site_text,
        tuple(sorted(cells.items())),
        arrows,
    )


def _columns(steps: list[StepView]) -> list[Column]:
    out: list[Column] = []
    run: list[int] = []
    for i, s in enumerate(steps):
        if run:
            head = steps[run[0]]
            taken = {r for k in run for r in steps[k].members}
            if (s.op, s.site_text) == (head.op, head.site_text) and not taken & set(s.members):
                run.append(i)
                continue
            out.append(_column([steps[k] for k in run], run))
        run = [i]
    if run:
        out.append(_column([steps[k] for k in run], run))
    return out


def _folds(columns: list[Column]) -> list[Fold]:
    """Greedy, left to right: at each column the repeat covering the most columns."""
    folds, i, n = [], 0, len(columns)
    while i < n:
        best: Fold | None = None
        for p in range(1, min(MAX_PERIOD, (n - i) // MIN_TIMES) + 1):
            times = 1
            while i + (times + 1) * p <= n and all(
                columns[i + k].same(columns[i + times * p + k]) for k in range(p)
            ):
                times += 1
            if times >= MIN_TIMES and (best is None or p * times > best.period * best.times):
                best = Fold(i, p, times)
        if best is None:
            i += 1
        else:
            folds.append(best)
            i = best.end
    return folds


def timeline(steps: list[StepView]) -> Timeline:
    columns = _columns(steps)
    return Timeline(columns, _folds(columns))
