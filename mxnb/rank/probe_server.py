"""Answer "where are you?" while the rank's main thread is blocked.

A daemon thread serves a Unix socket in the cluster's private (0700) profile
directory.  MLX releases the GIL while it evaluates, so this thread can read
the main thread's current cell line and the op log's state even when the
rank waits inside an MPI call and can no longer answer ipyparallel.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable

from mxnb.protocol.messages import OpLogState, ProbeReply
from mxnb.protocol.probe import encode_reply, socket_path
from mxnb.rank import hooks

__all__ = ["ProbeServer"]


def _main_frame_site() -> str:
    site = hooks.cell_site(sys._current_frames().get(threading.main_thread().ident or 0))
    return site.describe() if site else ""


class ProbeServer:
    """One rank's probe socket and the thread that answers on it."""

    def __init__(self, profile_dir: str, rank: int, state: Callable[[], OpLogState]) -> None:
        self.path = socket_path(profile_dir, rank)
        self.rank = rank
        self.state = state
        self._server: socket.socket | None = None

    def reply(self) -> ProbeReply:
        state = self.state()
        return {**state, "rank": self.rank, "pid": os.getpid(), "line": _main_frame_site()}

    def start(self) -> None:
        """Listen (owner-only socket) and answer in a daemon thread; once."""
        if self._server is not None:
            return
        if os.path.exists(self.path):
            os.unlink(self.path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        os.chmod(self.path, 0o600)
        server.listen(4)
        self._server = server
        threading.Thread(target=self._serve, args=(server,), daemon=True, name="mxnb-probe").start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            if os.path.exists(self.path):
                os.unlink(self.path)

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(encode_reply(self.reply()))
                except OSError:
                    pass
