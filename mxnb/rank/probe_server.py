"""Answer "where are you?" while the rank's main thread is blocked.

A daemon thread serves a TCP socket on the one address that reaches the
kernel (see :mod:`mxnb.protocol.probe` for the exchange).  MLX releases the
GIL while it evaluates, so this thread can read the main thread's current
cell line and the op log's state even when the rank waits inside an MPI call
and can no longer answer ipyparallel.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable

from mxnb.protocol.messages import OpLogState, ProbeReply
from mxnb.protocol.probe import (
    ASK,
    INTERRUPT,
    NONCE_BYTES,
    PROOF_BYTES,
    encode_reply,
    join_address,
    proof,
)
from mxnb.rank import hooks

__all__ = ["ProbeServer", "cluster_key"]

#: Seconds a connection may take to prove itself before it is dropped.
PROOF_WAIT = 2.0
#: Connections answered at once.  Each has its own thread, so one that stalls
#: (a kernel interrupted between connecting and proving) cannot hold up the
#: next ask until PROOF_WAIT; the bound keeps stalled ones from piling up.
MAX_ANSWERING = 8


def _main_frame_site() -> str:
    site = hooks.cell_site(sys._current_frames().get(threading.main_thread().ident or 0))
    return site.describe() if site else ""


def cluster_key() -> bytes:
    """The cluster's message key, from the connection info the rank was given.

    Read at each request: on one host a rank learns it only after its probe
    already listens (see :func:`mxnb.rank.__main__.await_connection_info`).
    """
    try:
        return str(json.loads(os.environ["IPP_CONNECTION_INFO"])["key"]).encode()
    except (KeyError, ValueError, TypeError):
        return b""


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class ProbeServer:
    """One rank's probe socket and the thread that answers on it."""

    def __init__(
        self,
        ip: str,
        rank: int,
        state: Callable[[], OpLogState],
        key: Callable[[], bytes] = cluster_key,
        port: int = 0,
    ) -> None:
        self.ip = ip
        self.port = port
        self.rank = rank
        self.state = state
        self.key = key
        self.address = ""
        self._server: socket.socket | None = None

    def reply(self) -> ProbeReply:
        state = self.state()
        return {**state, "rank": self.rank, "pid": os.getpid(), "line": _main_frame_site()}

    def start(self) -> None:
        """Listen on ``ip`` and answer in a daemon thread; once.

        The port is a free one the first time, and the same one after a
        stop: the kernel learnt it when the rank started.
        """
        if self._server is not None:
            return
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.ip, self.port))
        server.listen(8)
        self.port = server.getsockname()[1]
        self.address = join_address(self.ip, self.port)
        self._server = server
        threading.Thread(target=self._serve, args=(server,), daemon=True, name="mxnb-probe").start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:  # wakes the thread blocked in accept, which holds the port otherwise
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()

    def _serve(self, server: socket.socket) -> None:
        slots = threading.BoundedSemaphore(MAX_ANSWERING)
        while True:
            slots.acquire()
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(
                target=self._answer_one, args=(conn, slots), daemon=True, name="mxnb-probe-answer"
            ).start()

    def _answer_one(self, conn: socket.socket, slots: threading.BoundedSemaphore) -> None:
        try:
            with conn:  # closed after any word on stderr: the kernel then sees silence
                try:
                    self._answer(conn)
                except OSError:
                    pass
                except Exception:  # a bug of ours: said on the rank's stderr; the probe lives on
                    traceback.print_exc()
        finally:
            slots.release()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(PROOF_WAIT)
        nonce = os.urandom(NONCE_BYTES)
        conn.sendall(nonce)
        shown = _recv_exact(conn, PROOF_BYTES + 1)
        command = shown[PROOF_BYTES:]
        key = self.key()
        if not key or not hmac.compare_digest(shown[:PROOF_BYTES], proof(key, nonce, command)):
            return  # not the kernel: say nothing
        if command == ASK:
            conn.sendall(encode_reply(self.reply()))
        elif command == INTERRUPT:
            conn.sendall(b"{}")
            os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread, as a stop button's
