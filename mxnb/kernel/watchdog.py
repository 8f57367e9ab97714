"""Clean up a cluster whose kernel died without stopping it.

Started by :class:`mxnb.kernel.cluster.MxCluster` in its own session, so a signal to
the kernel does not reach it.  When the kernel process is gone (SIGKILL, OOM,
a crashed kernel), it stops every process listed in the profile's pid file and
removes the private profile directory.  A normal stop kills the watchdog first.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import psutil

POLL_SECONDS = 0.5


def _read_pids(profile_dir: str) -> list[int]:
    try:
        with open(os.path.join(profile_dir, "mxnb-pids")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def watch(parent_pid: int, profile_dir: str) -> None:
    try:
        parent = psutil.Process(parent_pid)
        born = parent.create_time()
    except psutil.NoSuchProcess:
        born = None
    while born is not None and os.path.isdir(profile_dir):
        try:
            p = psutil.Process(parent_pid)
            if p.create_time() != born or p.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_SECONDS)
    if not os.path.isdir(profile_dir):
        return  # stopped normally
    from mxnb.kernel.processes import kill_pids, live_groups

    listed = _read_pids(profile_dir)  # negative: a process group
    groups = live_groups([-p for p in listed if p < 0], profile_dir)
    kill_pids([p for p in listed if p > 0], groups=groups)
    shutil.rmtree(profile_dir, ignore_errors=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
