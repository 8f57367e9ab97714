"""Run one cell on a set of ranks: stream output by rank, wait with a deadline.

The runner knows nothing about magics or widgets.  It returns a
:class:`CellResult` that says, per rank, what was printed, what the last
expression was and what went wrong, so that the magic can render it and later
layers (trace views, hang reports) can build on it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TextIO

from mxnb.kernel import ipp
from mxnb.protocol.messages import COST_PAYLOAD, ORDER_PAYLOAD, CostPayload

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
    #: groups whose collectives the rank ran out of call order, and in which
    #: order (label -> run_order_digest, from the rank's OrderPayload)
    late: dict[str, str] = field(default_factory=dict)
    #: the rank ran a loop of small ops that mxnb watched (its CostPayload)
    cost: CostPayload | None = None


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
    finishes, so two ranks never share a line.  For the first ``hold``
    seconds lines are collected and then written in rank order, so a short
    cell reads rank 0, rank 1, ...; after that they stream as they arrive.
    """

    def __init__(
        self,
        ranks: Sequence[int],
        out: TextIO | None = None,
        err: TextIO | None = None,
        hold: float = 0.5,
    ) -> None:
        self.ranks = list(ranks)
        self.out = out
        self.err = err
        self.until = time.monotonic() + hold
        self._seen: dict[tuple[int, str], int] = {}
        self._pending: dict[tuple[int, str], str] = {}
        self._queued: dict[tuple[int, str], list[str]] = {}

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
            self._queued.setdefault(key, []).extend(lines)
        if time.monotonic() >= self.until:
            self.flush()

    def flush(self) -> None:
        """Write everything queued, rank by rank."""
        for key in sorted(self._queued):
            lines = self._queued.pop(key)
            stream = self._stream(key[1])
            stream.write("".join(f"{label(key[0])}{ln}\n" for ln in lines))
            stream.flush()


def _error_of(exc: Any) -> dict[str, Any]:
    if exc is None:  # ipyparallel fails the task of an engine that died
        return {"ename": "EngineError", "evalue": "the rank's process died", "traceback": []}
    tb = getattr(exc, "traceback", None) or ""
    if isinstance(tb, str):
        tb = tb.splitlines()
    return {
        "ename": getattr(exc, "ename", type(exc).__name__),
        "evalue": getattr(exc, "evalue", str(exc)),
        "traceback": list(tb),
    }


class CellRun:
    """One cell executing on some ranks; wait on it as often as needed."""

    def __init__(self, view: Any, code: str, streamer: RankStreamer | None = None) -> None:
        self.ranks = list(view.targets)
        self.code = code
        self.streamer = streamer or RankStreamer(self.ranks)
        self.result = CellResult([RankOutcome(rank=r) for r in self.ranks])
        self.t0 = time.monotonic()
        self.ar = view.execute(code, silent=False, block=False)
        self.result.extra["async_result"] = self.ar

    def wait(
        self,
        timeout: float | None = None,
        *,
        watch: Callable[[CellResult], str | None] | None = None,
        watch_every: float = 1.0,
    ) -> str | None:
        """Wait until every rank finished, or ``timeout`` passed, or ``watch``
        (called about every ``watch_every`` s) names a reason to stop waiting.

        Returns None when all finished, else "timeout", "interrupt" or the
        watcher's reason.  Ctrl-C returns "interrupt" at once: the caller
        decides what to do with ranks that are still running.
        """
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        next_watch = now + watch_every
        try:
            while not self.poll():
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    return "timeout"
                if watch is not None and now >= next_watch:
                    next_watch = now + watch_every
                    reason = watch(self.result)
                    if reason:
                        return reason
                self._sleep()
        except KeyboardInterrupt:
            return "interrupt"
        return None

    def _sleep(self) -> None:
        """Until the next poll, waking as soon as everything has arrived.

        Replies and their output arrive separately (iopub can trail the
        reply), so once every reply is in, wait on the output instead: waiting
        on finished replies would return at once and spin.
        """
        if self.ar.done():
            futures.wait([c.output for c in ipp.task_futures(self.ar)], timeout=POLL_SECONDS)
        else:
            self.ar.wait(POLL_SECONDS)

    def poll(self, final: bool = False) -> bool:
        """Stream new output; mark finished ranks.  True when all are done."""
        done = _poll(self.ar, self.result.outcomes, self.streamer, final)
        _collect(self.ar, self.result.outcomes)
        return done

    def finish(self) -> CellResult:
        """Flush held-back output and fill in results; safe to call once waiting ends."""
        self.poll(final=True)
        self.streamer.flush()
        self.result.elapsed = time.monotonic() - self.t0
        return self.result


def run_cell(
    view: Any,
    code: str,
    *,
    timeout: float | None = None,
    streamer: RankStreamer | None = None,
) -> CellResult:
    """Execute ``code`` on every target of ``view`` (engine id == rank) and wait.

    Output is streamed while the cell runs.  With ``timeout`` the call returns
    when it expires even if ranks are still running (``timed_out``); Ctrl-C
    returns at once (``interrupted``), leaving the ranks running.
    """
    run = CellRun(view, code, streamer)
    why = run.wait(timeout)
    run.result.timed_out = why == "timeout"
    run.result.interrupted = why == "interrupt"
    return run.finish()


def _finished(child: Any) -> bool:
    """Reply received *and* all its output: iopub can trail the reply."""
    return bool(child.done() and child.output.done())


def _poll(
    ar: Any, outcomes: list[RankOutcome], streamer: RankStreamer, final: bool = False
) -> bool:
    """Stream new output; mark finished ranks.  True when all are done."""
    # the client appends each rank's output to its metadata as it arrives
    for o, child, md in zip(outcomes, ipp.task_futures(ar), ipp.reply_metadata(ar), strict=True):
        if _finished(child):
            o.done = True
        end = final or o.done
        o.stdout, o.stderr = md["stdout"], md["stderr"]
        streamer.feed(o.rank, "stdout", o.stdout, final=end)
        streamer.feed(o.rank, "stderr", o.stderr, final=end)
    return all(o.done for o in outcomes)


def _collect(ar: Any, outcomes: list[RankOutcome]) -> None:
    """Fill in results and errors of the ranks that finished."""
    for o, child, md in zip(outcomes, ipp.task_futures(ar), ipp.reply_metadata(ar), strict=True):
        if (o.error or o.result) is not None or not _finished(child):
            continue  # already collected, or still running
        o.done = True
        if md.get("status") == "error" or md.get("error") is not None:
            # a dead engine fails its task without a remote error
            o.error = _error_of(md.get("error") or child.exception())
            continue
        er = md.get("execute_result")
        if er:
            o.result = er.get("data") or None
        for said in ipp.reply_payloads(child):
            if said.get("source") == ORDER_PAYLOAD:
                o.late = dict(said["groups"])
            elif said.get("source") == COST_PAYLOAD:
                o.cost = said  # type: ignore[assignment]
