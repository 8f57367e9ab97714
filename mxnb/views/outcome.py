"""A cell's outcome as text: each rank's last value, and errors by rank."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mxnb.protocol.wording import ranks_text

if TYPE_CHECKING:
    from mxnb.kernel.runner import CellResult, RankOutcome

__all__ = [
    "RankResults",
    "error_lines",
    "error_summary",
    "shown_failures",
    "strip_ansi",
    "user_frames",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: Errors that mxnb's own interrupt caused; the report explains those ranks.
INTERRUPT_ERRORS = ("KeyboardInterrupt", "CommInterrupted", "EngineError")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


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


def shown_failures(result: CellResult, hide_interrupted: bool) -> list[RankOutcome]:
    """The failed ranks whose errors are shown (not those mxnb interrupted itself)."""
    hide = INTERRUPT_ERRORS if hide_interrupted else ()
    return [o for o in result.failed if o.error and o.error["ename"] not in hide]


#: The first line of a traceback frame in mxnb's own rank-side code.
_OUR_FRAME = re.compile(r"^File .*[/\\]mxnb[/\\](rank|protocol)[/\\]")
_HIDDEN = re.compile(r"^\s*\[\.\.\. skipping hidden \d+ frames?\]")


def user_frames(traceback: Sequence[str]) -> list[str]:
    """A rank's traceback without mxnb's frames: the user's cell and libraries only.

    mxnb's wrappers sit between the user's call and MLX; their frames say
    nothing about the user's mistake.  A frame runs from its ``File ...`` line
    to the next blank line (ipyparallel may hand the traceback over line by line).
    """
    lines = [ln for t in traceback for ln in t.split("\n")]
    out: list[str] = []
    skipping = False
    for ln in lines:
        plain = strip_ansi(ln)
        if _OUR_FRAME.match(plain) or _HIDDEN.match(plain):
            skipping = True
        elif skipping and not plain.strip():
            skipping = False
            continue
        if not skipping:
            out.append(ln)
    return out


def _group_errors(failed: Sequence[RankOutcome]) -> list[tuple[list[int], dict[str, Any]]]:
    """Ranks that failed the same way are shown once."""
    groups: dict[str, tuple[list[int], dict[str, Any]]] = {}
    for o in failed:
        assert o.error is not None
        shown = {**o.error, "traceback": user_frames(o.error["traceback"])}
        key = "\n".join(strip_ansi(t) for t in shown["traceback"]) or o.error["evalue"]
        groups.setdefault(key, ([], shown))[0].append(o.rank)
    return list(groups.values())


def error_summary(shown: Sequence[RankOutcome], headline: str) -> str:
    """One line per distinct error message (tracebacks may differ by line)."""
    by_message: dict[tuple[str, str], list[int]] = {}
    for o in shown:
        assert o.error is not None
        by_message.setdefault((o.error["ename"], o.error["evalue"]), []).append(o.rank)
    parts = [headline] if headline else []
    parts += [f"{ranks_text(r)}: {name}: {value}" for (name, value), r in by_message.items()]
    return "; ".join(parts)


def error_lines(shown: Sequence[RankOutcome], headline: str, report: str, note: str) -> list[str]:
    """What the notebook shows for a failed cell: tracebacks by rank, report, note."""
    lines: list[str] = []
    if headline:
        lines.append(headline)
    for ranks, err in _group_errors(shown):
        lines.append(f"--- {ranks_text(ranks)} raised {err['ename']} ---")
        lines.extend(err["traceback"] or [f"{err['ename']}: {err['evalue']}"])
    if report:
        if not report.startswith("Likely cause: "):  # else a cause alone, no ranks stuck
            lines.append("--- where each rank was ---")
        lines.extend(report.splitlines())
    if note:
        lines.append(note)
    return lines
