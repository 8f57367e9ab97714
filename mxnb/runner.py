"""Run one cell on a set of ranks: stream output by rank, wait with a deadline.

The runner knows nothing about magics or widgets.  It returns a
:class:`CellResult` that says, per rank, what was printed, what the last
expression was and what went wrong, so that the magic can render it and later
layers (trace views, hang reports) can build on it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["CellResult", "RankOutcome", "RankStreamer", "run_cell"]

POLL_SECONDS = 0.02


@dataclass
class RankOutcome:
    """What one rank did with the cell."""

    rank: int
    stdout: str = ""
    stderr: str = ""
    result: dict[str, Any] | None = None  # mime bundle of the last expression
    error: dict[str, Any] | None = None  # ename, evalue, traceback (list of lines)
    done: bool = False


@dataclass
class CellResult:
    """Every rank's outcome, in rank order."""

    outcomes: list[RankOutcome]
    elapsed: float = 0.0
    timed_out: bool = False
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.done and o.error is None for o in self.outcomes)

    @property
    def failed(self) -> list[RankOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def unfinished(self) -> list[int]:
        return [o.rank for o in self.outcomes if not o.done]


def label(rank: int) -> str:
    return f"[rank {rank}] "


class RankStreamer:
    """Writes each rank's new output as whole lines prefixed by its rank.

    Partial lines are held back until their newline arrives or the rank
    finishes, so two ranks never share a line.
    """

    def __init__(
        self, ranks: Sequence[int], out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.ranks = list(ranks)
        self.out = out
        self.err = err
        self._seen: dict[tuple[int, str], int] = {}
        self._pending: dict[tuple[int, str], str] = {}

    def _stream(self, name: str) -> TextIO:
        chosen = self.out if name == "stdout" else self.err
        if chosen is not None:
            return chosen
        return sys.stdout if name == "stdout" else sys.stderr

    def feed(self, rank: int, name: str, text: str, final: bool = False) -> None:
        """Give the full text captured so far for (rank, stream)."""
        key = (rank, name)
        start = self._seen.get(key, 0)
        new = text[start:]
        self._seen[key] = len(text)
        buf = self._pending.get(key, "") + new
        lines = buf.split("\n")
        rest = lines.pop()
        if final and rest:
            lines.append(rest)
            rest = ""
        self._pending[key] = rest
        if lines:
            stream = self._stream(name)
            stream.write("".join(f"{label(rank)}{ln}\n" for ln in lines))
            stream.flush()


def _error_of(exc: Any) -> dict[str, Any]:
    tb = getattr(exc, "traceback", None) or ""
    if isinstance(tb, str):
        tb = tb.splitlines()
    return {
        "ename": getattr(exc, "ename", type(exc).__name__),
        "evalue": getattr(exc, "evalue", str(exc)),
        "traceback": list(tb),
    }


def _interrupt(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass


def run_cell(
    view: Any,
    code: str,
    *,
    timeout: float | None = None,
    streamer: RankStreamer | None = None,
    rank_pids: Sequence[int] = (),
    interrupt_grace: float = 3.0,
) -> CellResult:
    """Execute ``code`` on every target of ``view`` (engine id == rank).

    Output is streamed while the cell runs.  With ``timeout`` the call returns
    when it expires even if ranks are still running (``timed_out``); Ctrl-C
    (the kernel's stop button) interrupts the ranks and returns too.
    """
    ranks = list(view.targets)
    streamer = streamer or RankStreamer(ranks)
    outcomes = [RankOutcome(rank=r) for r in ranks]
    t0 = time.monotonic()
    ar = view.execute(code, silent=False, block=False)
    result = CellResult(outcomes)
    deadline = None if timeout is None else t0 + timeout
    try:
        while True:
            finished = _poll(ar, outcomes, streamer)
            if finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                result.timed_out = True
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        result.interrupted = True
        if rank_pids:
            _interrupt([p for o, p in zip(outcomes, rank_pids, strict=True) if not o.done])
        end = time.monotonic() + interrupt_grace
        while time.monotonic() < end and not _poll(ar, outcomes, streamer):
            time.sleep(POLL_SECONDS)
    _collect(ar, outcomes)
    _poll(ar, outcomes, streamer, final=True)
    result.elapsed = time.monotonic() - t0
    result.extra["async_result"] = ar
    return result


def _finished(child: Any) -> bool:
    """Reply received *and* all its output: iopub can trail the reply."""
    return bool(child.done() and child.output.done())


def _poll(
    ar: Any, outcomes: list[RankOutcome], streamer: RankStreamer, final: bool = False
) -> bool:
    """Stream new output; mark finished ranks.  True when all are done."""
    stdouts, stderrs = ar["stdout"], ar["stderr"]
    for i, (o, child) in enumerate(zip(outcomes, ar._children, strict=True)):
        if _finished(child):
            o.done = True
        end = final or o.done
        o.stdout, o.stderr = stdouts[i], stderrs[i]
        streamer.feed(o.rank, "stdout", o.stdout, final=end)
        streamer.feed(o.rank, "stderr", o.stderr, final=end)
    return all(o.done for o in outcomes)


def _collect(ar: Any, outcomes: list[RankOutcome]) -> None:
    """Fill in results and errors of the ranks that finished."""
    for o, child, md in zip(outcomes, ar._children, ar._metadata, strict=True):
        if not _finished(child):
            continue
        o.done = True
        if md.get("status") == "error" or md.get("error") is not None:
            o.error = _error_of(md.get("error"))
            continue
        er = md.get("execute_result")
        if er:
            o.result = er.get("data") or None
