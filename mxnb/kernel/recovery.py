"""When a cell cannot finish: notice it, explain it, leave a usable cluster.

Four ways a distributed cell goes wrong without ever returning: a rank dies,
ranks wait on peers that will never come (a stall), the user's timeout
expires, or the user presses stop.  :class:`HangWatch` notices the first two
while the cell runs; :func:`settle` handles all four the same way: take each
rank's report, interrupt the ranks that still run, and if some are blocked
inside MPI where no signal reaches them, stop the job so the next cell gets
fresh ranks.  The user is told which of these happened.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from mxnb.kernel import remote
from mxnb.kernel.diagnose import Diagnosis, diagnose
from mxnb.kernel.live import LIVE_AFTER, LiveStrip
from mxnb.kernel.runner import CellResult, CellRun
from mxnb.kernel.waitgraph import wait_graph
from mxnb.protocol.wording import ranks_text

__all__ = ["HangWatch", "Settlement", "settle"]

#: Seconds ranks get to stop after SIGINT before the MPI job is stopped.
INTERRUPT_GRACE = 2.5


def _status(result: CellResult) -> dict[int, str]:
    return {
        o.rank: ("failed" if o.error else "done") if o.done else "running" for o in result.outcomes
    }


class HangWatch:
    """Called by :meth:`CellRun.wait` about once a second while a cell runs."""

    def __init__(self, cluster: Any, grace: float, live: LiveStrip | None = None) -> None:
        self.cluster = cluster
        self.grace = grace
        self.live = live
        self.started = time.monotonic()
        self.diagnosis: Diagnosis | None = None

    def __call__(self, result: CellResult) -> str | None:
        if self.cluster.dead_ranks():
            return "crash"
        elapsed = time.monotonic() - self.started
        if elapsed < min(self.grace, LIVE_AFTER if self.live else self.grace):
            return None
        # one round of probes feeds both the live strip and the hang rules
        states, status = self.cluster.ask_probes(), _status(result)
        if self.live is not None:
            self.live.update(wait_graph(states, status, hosts=self.cluster.spread()), elapsed)
        if elapsed < self.grace:
            return None
        d = diagnose(states, status, grace=self.grace, hosts=self.cluster.spread())
        if d.cause:
            self.diagnosis = d
            return "stall"
        return None


@dataclass
class Settlement:
    """What happened, what each rank was doing, and what became of the cluster."""

    report: str
    note: str
    cluster_lost: bool
    diagnosis: Diagnosis | None = None  # who waited for whom (not after a crash)


def launcher_message(output: str) -> str:
    """The launcher's own block (from its first ``----`` line), without rank tracebacks."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("-----"):
            return "\n".join(lines[i : i + 14])
    return ""


_EXIT = re.compile(r"@\d+,(\d+)\].*?Exit code:\s*(-?\d+)", re.S)
_SIGNAL = re.compile(r"process rank (\d+) .*?exited on\s+signal\s+(\d+)(?:\s+\(([^)]*)\))?", re.S)


def crash_sentence(message: str) -> str | None:
    """Which rank ended the job and how, from Open MPI's launcher message."""
    m = _SIGNAL.search(message)
    if m:
        name = f" ({m.group(3)})" if m.group(3) else ""
        return f"rank {m.group(1)} was killed by signal {m.group(2)}{name}; the MPI job ended."
    m = _EXIT.search(message)
    if m:
        return f"rank {m.group(1)} exited with code {m.group(2)}; the MPI job ended."
    return None


def discarded_text(dropped: dict[int, list[tuple[int, int]]]) -> str:
    """What the reset threw away, so that it cannot land in a later recv."""
    parts = [
        f"rank {dst} discarded {n} bytes rank {src} had sent"
        for dst, msgs in sorted(dropped.items())
        for src, n in msgs
    ]
    if not parts:
        return ""
    return (
        " Messages sent before the interrupt for a recv that never ran were discarded, "
        "so that no later recv gets them: " + "; ".join(parts) + "."
    )


def settle(cluster: Any, run: CellRun, reason: str, diagnosis: Diagnosis | None) -> Settlement:
    """Explain why the cell did not finish and make the cluster usable again."""
    result = run.result
    if reason == "crash":
        dead = cluster.dead_ranks()
        # mpiexec writes why the rank ended, then exits: give it a moment
        deadline = time.monotonic() + 3.0
        output = launcher_message(cluster.mpiexec_output(40))
        while not crash_sentence(output) and time.monotonic() < deadline:
            time.sleep(0.1)
            output = launcher_message(cluster.mpiexec_output(40))
        cluster.stop()
        report = crash_sentence(output) or f"{ranks_text(dead)} died while the cell ran."
        if output:
            report += "\nmpiexec reported:\n" + output
        note = "The next %%mxdist cell starts fresh ranks (variables on the ranks are lost)."
        return Settlement(report, note, True)
    if diagnosis is None:
        states = cluster.ask_probes()
        diagnosis = diagnose(states, _status(result), grace=0.0, hints=True, hosts=cluster.spread())
    running = [o.rank for o in result.outcomes if not o.done]
    cluster.interrupt(running)
    run.wait(INTERRUPT_GRACE)
    still = [o.rank for o in result.outcomes if not o.done]
    report = diagnosis.text()
    if still:
        cluster.stop()
        note = (
            f"{ranks_text(still)} did not respond to an interrupt (blocked inside an MPI "
            "call), so the MPI job was stopped. The next %%mxdist cell starts fresh "
            "ranks (variables on the ranks are lost)."
        )
        return Settlement(report, note, True, diagnosis)
    dropped = remote.reset_checks(cluster.view) if running else {}
    note = (
        f"{ranks_text(running)} {'was' if len(running) == 1 else 'were'} interrupted; "
        "the cluster is ready for the next cell (variables kept)."
        if running
        else "The cluster is ready for the next cell."
    )
    note += discarded_text(dropped)
    return Settlement(report, note, False, diagnosis)
