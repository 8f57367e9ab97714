"""Answer "where are you?" while the rank's main thread is blocked.

A daemon thread serves a Unix socket in the cluster's private (0700) profile
directory.  MLX releases the GIL while it evaluates, so this thread can read
the main thread's current cell line and the monitor's state even when the
rank waits inside an MPI call and can no longer answer ipyparallel.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from typing import Any

from mxnb.engine import hooks
from mxnb.engine.monitor import monitor

__all__ = ["socket_path", "start"]

_started: list[str] = []


def socket_path(profile_dir: str, rank: int) -> str:
    return os.path.join(profile_dir, f"probe-{rank}.sock")


def _main_frame_site() -> str:
    site = hooks.cell_site(sys._current_frames().get(threading.main_thread().ident or 0))
    return site.describe() if site else ""


def report(rank: int) -> dict[str, Any]:
    state = monitor.snapshot()
    state.update(rank=rank, pid=os.getpid(), line=_main_frame_site())
    return state


def _serve(server: socket.socket, rank: int) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            try:
                conn.sendall(json.dumps(report(rank), default=str).encode())
            except OSError:
                pass


def start(profile_dir: str, rank: int) -> str:
    """Start serving once per process; returns the socket path."""
    path = socket_path(profile_dir, rank)
    if path in _started:
        return path
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(4)
    threading.Thread(target=_serve, args=(server, rank), daemon=True, name="mxnb-probe").start()
    _started.append(path)
    return path
