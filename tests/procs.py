"""Counting the processes a cluster leaves behind, by its private profile dir.

Controller, mpiexec, ranks and their helpers all carry ``IPP_PROFILE_DIR`` in
their environment; the watchdog names the profile dir on its command line.
Every process started during a test session inherits ``MXNB_TEST_SESSION``,
so counting never mistakes someone else's cluster on the same machine for ours.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

SESSION_VAR = "MXNB_TEST_SESSION"
os.environ.setdefault(SESSION_VAR, uuid.uuid4().hex)
SESSION = os.environ[SESSION_VAR]


def _profile_of(p: psutil.Process) -> str | None:
    try:
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        env = p.environ()
        if env.get(SESSION_VAR) != SESSION:
            return None
        cmd = p.cmdline()
        if "mxnb.kernel.watchdog" in cmd:
            return cmd[-1]
        return env.get("IPP_PROFILE_DIR")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return None


def processes_with(profile: str) -> list[psutil.Process]:
    """Live processes that belong to the cluster with this profile dir."""
    return [p for p in psutil.process_iter() if _profile_of(p) == profile]


def cluster_processes() -> list[psutil.Process]:
    """Every live process that belongs to some mxnb cluster."""
    found = []
    for p in psutil.process_iter():
        prof = _profile_of(p)
        if prof and os.path.basename(prof).startswith("mxnb-"):
            found.append(p)
    return found


def wait_gone(profile: str, timeout: float) -> list[psutil.Process]:
    """Wait until no process belongs to ``profile``; return what is left."""
    deadline = time.monotonic() + timeout
    left = processes_with(profile)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_with(profile)
    return left


@contextmanager
def jupyter_kernel(name: str) -> Iterator[tuple[Any, Any]]:
    """A real Jupyter kernel and its client, ready; shut down as Jupyter does it
    (``now=False``: the kernel's own shutdown runs) unless the test already did."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=False)


def stop_output_relay(cluster: Any) -> int:
    """Kill the controller's relay of the ranks' output, as a relay that could not
    bind its port ends (it is a process of its own); returns its pid."""
    return stop_relay(cluster, "client", "iopub")


def stop_heart_monitor(cluster: Any, timeout: float = 10) -> int:
    """Kill the controller's heart monitor as soon as it listens (it is the
    controller's last process to start), as one that could not bind its port ends;
    returns its pid."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return stop_relay(cluster, "engine", "hb_ping")
        except (AssertionError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def stop_relay(cluster: Any, side: str, channel: str) -> int:
    """Kill the process of the controller that listens on the port ``channel`` of its
    connection file for ``side`` ("client" or "engine"); returns its pid."""
    security = os.path.join(cluster.profile_dir, "security")
    (named,) = [f for f in os.listdir(security) if f.endswith(f"-{side}.json")]
    with open(os.path.join(security, named)) as f:
        port = json.load(f)[channel]
    controller = psutil.Process(cluster._ipp.controller.pid)
    for child in controller.children(recursive=True):
        if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in child.net_connections("tcp")):  # fmt: skip
            child.kill()  # the controller's child, not ours: it reaps it
            deadline = time.monotonic() + 5
            while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < deadline, "the relay outlived SIGKILL"
                time.sleep(0.05)
            return child.pid
    raise AssertionError(f"no process of the controller listens on its {channel} port {port}")
