"""Stopping the processes a cluster started: by pid, and by the groups they lead.

A process that dies abruptly leaves its children to init; only the process
group it led still finds them.  A group id is a pid, though, and may be
reused once the group is empty, so a group is signalled only while it still
holds a process of this cluster.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import psutil

__all__ = ["alive", "kill_pids", "led_groups", "live_groups"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    if pgid > 1 and pgid != os.getpgrp():  # never our own group
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _procs(pids: Sequence[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def kill_pids(pids: Sequence[int], grace: float = 3.0, groups: Sequence[int] = ()) -> None:
    """SIGTERM the given processes (and groups), then SIGKILL what is left after ``grace``."""
    procs = _procs(pids)
    for p in procs:
        try:
            p.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    left = _wait(procs, grace)
    for p in left:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)


def _wait(procs: list[psutil.Process], grace: float) -> list[psutil.Process]:
    """Those of ``procs`` still running after ``grace`` seconds.

    A zombie counts as gone: it has exited and waits for its parent (or init)
    to reap it, and ``psutil.wait_procs`` would wait out the whole grace on a
    zombie that is not our own child.  So it waits in short slices and drops
    zombies between them.
    """
    deadline = time.monotonic() + grace
    left = procs
    while left:
        left = [p for p in left if alive(p.pid)]
        if not left or time.monotonic() >= deadline:
            break
        _, left = psutil.wait_procs(left, timeout=min(0.05, deadline - time.monotonic()))
    return left


def live_groups(groups: Sequence[int], profile_dir: str) -> list[int]:
    """Those ``groups`` that still hold a process of the cluster using ``profile_dir``."""
    wanted, found = set(groups), set()
    for proc in psutil.process_iter():
        try:
            pgid = os.getpgid(proc.pid)
            if pgid in wanted and pgid not in found:
                if proc.environ().get("IPP_PROFILE_DIR") == profile_dir:
                    found.add(pgid)
        except (psutil.Error, OSError):
            pass
    return sorted(found)


def led_groups(pids: Sequence[int]) -> list[int]:
    """Those of ``pids`` that lead a process group of their own."""
    out = []
    for pid in pids:
        try:
            if os.getpgid(pid) == pid != os.getpgrp():
                out.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return out
