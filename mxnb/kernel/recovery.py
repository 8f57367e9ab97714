"""When a cell cannot finish: notice it, explain it, leave a usable cluster.

Five ways a distributed cell goes wrong without ever returning: a rank dies,
ranks wait on peers that will never come (a stall), the ranks' answers are
lost on the way (:mod:`mxnb.kernel.relay`), the user's timeout expires, or the
user presses stop.  :class:`HangWatch` notices the first three while the cell
runs.  :func:`settle` stops the job after a crash or lost answers; after a
stall, a timeout or stop it takes each rank's report, interrupts the ranks
that still run, and if some are blocked inside MPI where no signal reaches
them, stops the job so the next cell gets fresh ranks.  The user is told
which of these happened.  Ranks that end while no cell runs (killed, or shut
down for want of the controller's heartbeat) are not a failure of the next
cell: it says how they ended (:func:`between_cells`) and runs on fresh ranks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mxnb.kernel import remote
from mxnb.kernel.diagnose import Diagnosis, diagnose
from mxnb.kernel.lastwords import LastWords, last_words
from mxnb.kernel.live import LIVE_AFTER, LiveStrip
from mxnb.kernel.relay import LostWatch, lost_report, unanswered
from mxnb.kernel.runner import CellResult, CellRun
from mxnb.kernel.waitgraph import wait_graph
from mxnb.protocol.startup import faults_of
from mxnb.protocol.wording import ranks_text

__all__ = ["HangWatch", "Settlement", "between_cells", "crash_output", "crash_report", "settle"]

#: Lines of mpiexec's output read after a crash: the dead rank's stacks come before
#: the launcher's block.
OUTPUT_LINES = 300
#: Seconds ranks get to stop after SIGINT before the MPI job is stopped.
INTERRUPT_GRACE = 2.5
#: Seconds a report waits, at most, on a probe silent in its first second
#: before it says the rank is not answering (only a report waits: the once-a-
#: second watch asks again next time anyway).
REPORT_PATIENCE = 3.0


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
        self.lost = LostWatch()

    def __call__(self, result: CellResult) -> str | None:
        if self.cluster.dead_ranks():
            return "crash"
        elapsed = time.monotonic() - self.started
        if elapsed < min(self.grace, LIVE_AFTER if self.live else self.grace):
            return None
        # one round of probes feeds both the live strip and the hang rules
        states, status = self.cluster.ask_probes(), _status(result)
        if self.lost(result, states):
            return "lost"
        if self.live is not None:
            self.live.update(wait_graph(states, status, hosts=self.cluster.spread()), elapsed)
        if elapsed < self.grace:
            return None
        d = diagnose(states, status, grace=self.grace, hosts=self.cluster.spread())
        silent = [rank for rank, state in states.items() if state is None]
        if d.cause and silent:  # the report would say "not answering": make sure
            states.update(self.cluster.ask_probes(silent, again=REPORT_PATIENCE))
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
            block = lines[i : i + 14]
            ends = [k for k, text in enumerate(block) if k and text.startswith("-----")]
            return "\n".join(block[: ends[0] + 1] if ends else block)
    return ""


_EXIT = re.compile(r"@\d+,(\d+)\].*?Exit code:\s*(-?\d+)", re.S)
_SIGNAL = re.compile(r"process rank (\d+) .*?exited on\s+signal\s+(\d+)(?:\s+\(([^)]*)\))?", re.S)


_DEAD = re.compile(r"process rank \d+ with PID (\d+)")


def dead_pid(message: str) -> int | None:
    """The process id Open MPI's launcher names in its message about a dead rank."""
    m = _DEAD.search(message)
    return int(m.group(1)) if m else None


def crash_sentence(message: str, where: str = "") -> str | None:
    """Which rank ended the job and how, from Open MPI's launcher message;
    ``where``: where in the cell it was (:meth:`LastWords.sentence`)."""
    m = _SIGNAL.search(message)
    if m:
        how = f"signal {m.group(2)}" + (f" ({m.group(3)})" if m.group(3) else "")
        return f"rank {m.group(1)} was killed by {how}{where}; the MPI job ended."
    m = _EXIT.search(message)
    if m:
        return f"rank {m.group(1)} exited with code {m.group(2)}{where}; the MPI job ended."
    return None


def crash_output(cluster: Any) -> str:
    """mpiexec's output once it says why the job ended: it writes that, then
    exits, so it gets a moment, and the dead rank's last words (forwarded
    alongside) a moment more."""
    deadline = time.monotonic() + 3.0
    output = cluster.mpiexec_output(OUTPUT_LINES)
    while not crash_sentence(launcher_message(output)) and time.monotonic() < deadline:
        time.sleep(0.1)
        output = cluster.mpiexec_output(OUTPUT_LINES)
    return output


#: What an ipyparallel engine logs as it gives up on its controller's heartbeat.
_NO_HEARTBEAT = re.compile(r"Maximum number of heartbeats misses reached \((\d+) times (\d+) ms\)")


def between_cells(output: str, n: int) -> str:
    """Why the ``n`` ranks are gone though no cell ran, from mpiexec's ``output``
    (the job has ended).  Said before fresh ranks start."""
    message = launcher_message(output)
    said = crash_sentence(message) or f"{ranks_text(list(range(n)))} ended."
    m = _NO_HEARTBEAT.search(output)
    if m:
        seconds = int(m.group(1)) * int(m.group(2)) / 1000
        said += (
            f" The ranks shut themselves down: no heartbeat came from ipyparallel's "
            f"controller for {seconds:g} s ({m.group(1)} checks, {m.group(2)} ms apart), "
            "so its heart monitor had ended or hung."
        )
    text = f"since the last cell, {said} Fresh ranks start now; variables on the ranks are lost."
    return text + ("\nmpiexec reported:\n" + message if message else "")


#: Why a rank dies of a buffer overrun while evaluating, under mxnb's checks.
OVERRUN_CAUSE = (
    "MPI paired collectives of different sizes across the ranks and wrote past a buffer. "
    "mxnb's checks compare the ranks' calls, so with checks on this happens when ranks "
    "evaluate a group's collectives in different orders (with --no-check, also when they "
    "pass different shapes): evaluate them in the same order on every rank."
)


def crash_report(
    output: str,
    cell: str = "",
    fallback: str = "a rank died.",
    faults: dict[int, str] | None = None,
) -> str:
    """What a crash's report says: who ended the job and how, where it was in
    the cell and what it said as it died, the likely cause, then the launcher's
    own block.  ``output``: mpiexec's; ``cell``: the code the ranks ran;
    ``faults``: the fatal-error reports ranks left (rank -> text)."""
    message = launcher_message(output)
    words = _last_words(message, output, cell, faults or {})
    report = crash_sentence(message, words.sentence() if words else "") or fallback
    if words is not None and words.said:
        report += f"\nIt wrote as it died: {words.said}"
    # what the C library said is often lost with the job: with nothing said, an
    # evaluation that died takes the same likely cause
    if words is not None and words.evaluating and (words.overrun or not words.said):
        report += f"\nLikely cause: {OVERRUN_CAUSE}"
    if message:
        report += "\nmpiexec reported:\n" + message
    return report


def _last_words(message: str, output: str, cell: str, faults: dict[int, str]) -> LastWords | None:
    """The dead rank's last words: from its fault file, else from mpiexec's output."""
    if not cell:
        return None
    m = _SIGNAL.search(message)
    if m and int(m.group(1)) in faults:
        return last_words(faults[int(m.group(1))], cell, output=output)
    pid = dead_pid(message)
    return last_words(output, cell, pid) if pid is not None else None


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


def _lost(cluster: Any, missing: Mapping[int, str]) -> Settlement:
    """The ranks are idle, but what they send does not arrive: only new ranks,
    with a new controller, give a usable cluster."""
    report = lost_report(missing, cluster.profile_dir)
    cluster.stop()
    note = "The next %%mxdist cell starts fresh ranks (variables on the ranks are lost)."
    return Settlement(report, note, True)


def settle(
    cluster: Any,
    run: CellRun,
    reason: str,
    diagnosis: Diagnosis | None,
    missing: Mapping[int, str] | None = None,
) -> Settlement:
    """Explain why the cell did not finish and make the cluster usable again.

    ``missing``: for "lost", rank -> what of its answer did not arrive (:class:`LostWatch`).
    """
    result = run.result
    if reason == "lost":
        return _lost(cluster, missing or {})
    if reason == "crash":
        dead = cluster.dead_ranks()
        output = crash_output(cluster)
        where = cluster.profile_dir
        faults = faults_of(where, range(cluster.n)) if where else {}
        cluster.stop()
        fallback = f"{ranks_text(dead)} died while the cell ran."
        report = crash_report(output, run.code, fallback, faults)
        note = "The next %%mxdist cell starts fresh ranks (variables on the ranks are lost)."
        return Settlement(report, note, True)
    if diagnosis is None:
        states = cluster.ask_probes(again=REPORT_PATIENCE)
        diagnosis = diagnose(states, _status(result), grace=0.0, hints=True, hosts=cluster.spread())
    running = [o.rank for o in result.outcomes if not o.done]
    cluster.interrupt(running)
    run.wait(INTERRUPT_GRACE)
    still = [o.rank for o in result.outcomes if not o.done]
    report = diagnosis.text()
    if still:
        # a timeout or stop that came before lost answers were noticed: the
        # ranks are idle, not blocked in MPI
        missing = unanswered(result, cluster.ask_probes(still, again=REPORT_PATIENCE))
        if set(missing) == set(still):
            return _lost(cluster, missing)
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
