"""Whether ipyparallel's controller still carries the ranks' replies and output.

The controller relays each rank's reply (its "mux" queue) and each rank's
output (its "iopub" queue) in processes of their own.  It picks their ports
before each relay binds its own, from a pool only a process asking for a
port by number can take one of (:func:`mxnb.protocol.net.free_range`).  If
another process took the port meanwhile, that relay dies with "Address
already in use" while the controller lives on, and a cell never finishes:
its reply or output does not come, though every rank is idle.

The guards read what the ranks are doing rather than trust the relay.
Start-up watches the relays while the ranks register (the heart monitor,
whose beat completes a registration, is one too), then waits for the output
of its first request; a broken relay means starting again, on new ports.
While a cell runs, :class:`LostWatch` notices ranks that are idle yet whose
reply or output never arrived; a timeout or stop that comes first finds them
with the same rule, :func:`unanswered`.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Mapping
from concurrent import futures
from typing import Any

import psutil

from mxnb.errors import ClusterError
from mxnb.kernel import ipp
from mxnb.kernel.runner import CellResult
from mxnb.protocol.wording import ranks_text

__all__ = [
    "LOST_AFTER",
    "LostWatch",
    "RelayLost",
    "check_relays",
    "controller_errors",
    "lost_report",
    "unanswered",
]

#: Seconds a rank may be idle while its reply or output of the cell is missing.
#: Output trails a reply by milliseconds; a rank starts a cell as soon as it
#: gets it.
LOST_AFTER = 5.0
#: Seconds start-up waits for the output of its first request.
OUTPUT_WAIT = 5.0


class RelayLost(ClusterError):
    """The controller does not pass on what the ranks send; the message says which part."""


def controller_errors(profile_dir: str | None) -> list[str]:
    """The error lines of the controller's log (a relay that could not bind, ...)."""
    if not profile_dir:
        return []
    found = []
    for path in sorted(glob.glob(os.path.join(profile_dir, "log", "ipcontroller-*.log"))):
        try:
            with open(path, errors="replace") as f:
                found += [ln.strip() for ln in f if "Error:" in ln]
        except OSError:
            continue
    return found


def _said(profile_dir: str | None) -> str:
    errors = controller_errors(profile_dir)
    return f" The controller's log says: {errors[-1]}" if errors else ""


def check_relays(controller_pid: int, profile_dir: str | None) -> None:
    """Raise :class:`RelayLost` if one of the controller's relays has ended (see
    above): then the ranks never register, as the heart monitor is one too (each
    gives up after missing heartbeats for 30 s, and only then does ``mpiexec``
    end), or never get mxnb's first request, or their reply never comes.  An
    ended relay is a child left unreaped; one reaped already shows in the log.
    """
    try:
        children = psutil.Process(controller_pid).children()
    except psutil.NoSuchProcess:
        return
    ended = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                ended.append(child.pid)
        except psutil.NoSuchProcess:
            ended.append(child.pid)
    bound = [e for e in controller_errors(profile_dir) if "Address already in use" in e]
    if ended or bound:
        which = f" (process {', '.join(map(str, ended))})" if ended else ""
        raise RelayLost(
            f"a relay of ipyparallel's controller ended{which} as the ranks started, so "
            "messages between them and the notebook could not pass." + _said(profile_dir)
        )


def check_output(ar: Any, profile_dir: str | None, timeout: float = OUTPUT_WAIT) -> None:
    """Raise :class:`RelayLost` unless every rank's output of the finished request
    ``ar`` arrives within ``timeout`` s."""
    waiting = [c.output for c in ipp.task_futures(ar)]
    _, missing = futures.wait(waiting, timeout=timeout)
    if missing:
        raise RelayLost(
            f"the ranks answered, but their output did not arrive within {timeout:g} s: "
            "ipyparallel's controller is not relaying it." + _said(profile_dir)
        )


def unanswered(
    result: CellResult, states: Mapping[int, Mapping[str, Any] | None]
) -> dict[int, str]:
    """Ranks of the cell not done that are idle: rank -> "output" (its reply came,
    its output not yet) or "reply" (its probe says it runs no cell, and no reply
    came).  ``states``: the ranks' probe replies; a rank whose probe did not
    answer is not counted."""
    idle = {}
    children = ipp.task_futures(result.extra["async_result"])
    for outcome, child in zip(result.outcomes, children, strict=True):
        if outcome.done:
            continue
        state = states.get(outcome.rank)
        if child.done():
            idle[outcome.rank] = "output"
        elif state is not None and not state.get("running_cell", True):
            idle[outcome.rank] = "reply"
    return idle


class LostWatch:
    """Ranks that are idle, yet the notebook has not got their reply or output of the cell.

    Called with each round of probes; a rank counts from the first round that
    found it so, and is lost once that lasted :data:`LOST_AFTER` seconds with
    no more of its output arriving (a large output can trail its reply).
    """

    def __init__(self, after: float = LOST_AFTER) -> None:
        self.after = after
        #: rank -> (since when, how much of its output had arrived then)
        self.since: dict[int, tuple[float, int]] = {}
        #: rank -> "reply" or "output": what did not arrive
        self.missing: dict[int, str] = {}

    def __call__(
        self, result: CellResult, states: Mapping[int, Mapping[str, Any] | None]
    ) -> list[int]:
        now = time.monotonic()
        idle = unanswered(result, states)
        metadata = ipp.reply_metadata(result.extra["async_result"])
        came = {
            o.rank: sum(len(md.get(k) or "") for k in ("stdout", "stderr", "outputs"))
            for o, md in zip(result.outcomes, metadata, strict=True)
            if o.rank in idle
        }
        kept = {r: self.since.get(r) for r in idle}
        self.since = {
            r: was if was is not None and was[1] == came[r] else (now, came[r])
            for r, was in kept.items()
        }
        self.missing = idle
        return sorted(r for r, (t, _) in self.since.items() if now - t >= self.after)


def lost_report(missing: Mapping[int, str], profile_dir: str | None) -> str:
    """Which ranks' reply or output never came, and why that stops the cluster."""
    lines = []
    for what in ("reply", "output"):
        ranks = sorted(r for r, m in missing.items() if m == what)
        if not ranks:
            continue
        one = len(ranks) == 1
        if what == "reply":
            lines.append(
                f"{ranks_text(ranks)} {'is' if one else 'are'} idle, but the notebook got no "
                f"reply to the cell from {'it' if one else 'them'}: the cell, or the reply, "
                "was lost on the way."
            )
        else:
            lines.append(
                f"{ranks_text(ranks)} finished the cell, but what they printed never reached "
                "the notebook."
            )
    lines.append(
        "Likely cause: ipyparallel's controller stopped relaying messages between the "
        "notebook and the ranks." + _said(profile_dir)
    )
    return "\n".join(lines)
