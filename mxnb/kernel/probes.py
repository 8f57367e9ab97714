"""Ask the ranks' probes where they are (see :mod:`mxnb.rank.probe_server`)."""

from __future__ import annotations

import socket

from mxnb.protocol.messages import ProbeReply
from mxnb.protocol.probe import decode_reply

__all__ = ["ask", "ask_all"]


def ask(path: str, timeout: float = 1.0) -> ProbeReply | None:
    """One rank's state; None if it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return decode_reply(b"".join(chunks))
    except (OSError, ValueError):
        return None


def ask_all(paths: dict[int, str], timeout: float = 1.0) -> dict[int, ProbeReply | None]:
    return {rank: ask(path, timeout) for rank, path in paths.items()}
