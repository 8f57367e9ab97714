"""Plain-text rendering of a cell's outcome: results and errors by rank."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from mxnb.errors import MxnbError
from mxnb.runner import CellResult, RankOutcome

__all__ = ["RankError", "RankResults", "rank_set", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def rank_set(ranks: Iterable[int]) -> str:
    """``rank 2``, ``ranks 0-3``, ``ranks 0, 2, 3``."""
    rs = sorted(set(ranks))
    if len(rs) == 1:
        return f"rank {rs[0]}"
    if rs == list(range(rs[0], rs[-1] + 1)):
        return f"ranks {rs[0]}-{rs[-1]}"
    return "ranks " + ", ".join(map(str, rs))


def _indent_block(head: str, text: str) -> str:
    lines = text.splitlines() or [""]
    pad = " " * len(head)
    return "\n".join([head + lines[0]] + [pad + ln for ln in lines[1:]])


class RankResults:
    """The last expression of a cell, on every rank that had one."""

    def __init__(self, outcomes: Sequence[RankOutcome]) -> None:
        self.outcomes = [o for o in outcomes if o.result]

    def __bool__(self) -> bool:
        return bool(self.outcomes)

    def text(self) -> str:
        return "\n".join(
            _indent_block(f"Out[rank {o.rank}]: ", (o.result or {}).get("text/plain", ""))
            for o in self.outcomes
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def __repr__(self) -> str:
        return self.text()


def _group_errors(failed: Sequence[RankOutcome]) -> list[tuple[list[int], dict[str, Any]]]:
    """Ranks that failed the same way are shown once."""
    groups: dict[str, tuple[list[int], dict[str, Any]]] = {}
    for o in failed:
        assert o.error is not None
        key = "\n".join(strip_ansi(t) for t in o.error["traceback"]) or o.error["evalue"]
        groups.setdefault(key, ([], o.error))[0].append(o.rank)
    return list(groups.values())


#: Errors that mxnb's own interrupt caused; the report explains those ranks.
INTERRUPT_ERRORS = ("KeyboardInterrupt", "CommInterrupted", "EngineError")


class RankError(MxnbError):
    """Ranks raised, or the cell could not finish; names each rank.

    ``report`` (where each rank was, the likely cause) and ``note`` (what
    became of the cluster) follow the tracebacks.  Tracebacks of ranks that
    mxnb interrupted are left out: the report says where those ranks were.
    """

    def __init__(
        self, result: CellResult, note: str = "", report: str = "", headline: str = ""
    ) -> None:
        self.result = result
        self.note = note
        self.report = report
        self.headline = headline
        hide = INTERRUPT_ERRORS if report else ()
        self.shown = [o for o in result.failed if o.error and o.error["ename"] not in hide]
        self.failures = _group_errors(self.shown)
        super().__init__(self.summary())

    @property
    def ranks(self) -> list[int]:
        return [o.rank for o in self.result.failed]

    def summary(self) -> str:
        """One line per distinct error message (tracebacks may differ by line)."""
        by_message: dict[tuple[str, str], list[int]] = {}
        for o in self.shown:
            assert o.error is not None
            by_message.setdefault((o.error["ename"], o.error["evalue"]), []).append(o.rank)
        parts = [self.headline] if self.headline else []
        parts += [f"{rank_set(r)}: {name}: {value}" for (name, value), r in by_message.items()]
        return "; ".join(parts)

    def _render_traceback_(self) -> list[str]:
        lines: list[str] = []
        if self.headline:
            lines.append(self.headline)
        for ranks, err in self.failures:
            lines.append(f"--- {rank_set(ranks)} raised {err['ename']} ---")
            tb = err["traceback"] or [f"{err['ename']}: {err['evalue']}"]
            lines.extend(tb)
        if self.report:
            lines.append("--- where each rank was ---")
            lines.extend(self.report.splitlines())
        if self.note:
            lines.append(self.note)
        return lines
