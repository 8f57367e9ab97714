"""Ask the ranks' probes where they are, or interrupt them (see :mod:`mxnb.protocol.probe`)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

from mxnb.protocol.messages import ProbeReply
from mxnb.protocol.probe import ASK, INTERRUPT, NONCE_BYTES, decode_reply, proof, split_address

__all__ = ["ask", "ask_all", "interrupt"]


def _exchange(address: str, key: bytes, command: bytes, timeout: float) -> bytes:
    with socket.create_connection(split_address(address), timeout=timeout) as s:
        nonce = b""
        while len(nonce) < NONCE_BYTES:
            chunk = s.recv(NONCE_BYTES - len(nonce))
            if not chunk:
                raise ConnectionError("the probe closed before its nonce")
            nonce += chunk
        s.sendall(proof(key, nonce, command) + command)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def ask(address: str, key: bytes, timeout: float = 1.0) -> ProbeReply | None:
    """One rank's state; None if it does not answer."""
    try:
        return decode_reply(_exchange(address, key, ASK, timeout))
    except (OSError, ValueError):
        return None


def ask_all(
    addresses: dict[int, str], key: bytes, timeout: float = 1.0, again: float = 0.0
) -> dict[int, ProbeReply | None]:
    """Every rank's state; ranks silent within ``timeout`` are asked once more,
    for up to ``again`` seconds, where a report would otherwise call them
    not answering (a loaded machine can be slow for a moment).  The second
    asks run at once: many silent ranks still cost ``again`` seconds, not one each."""
    states = {rank: ask(address, key, timeout) for rank, address in addresses.items()}
    silent = [rank for rank, state in states.items() if state is None]
    if again > 0 and silent:
        with ThreadPoolExecutor(len(silent)) as pool:
            asked = pool.map(lambda rank: ask(addresses[rank], key, again), silent)
            states.update(zip(silent, asked, strict=True))
    return states


def interrupt(address: str, key: bytes, timeout: float = 1.0) -> bool:
    """Raise KeyboardInterrupt in a rank that no signal of ours reaches; True if it took it."""
    try:
        return _exchange(address, key, INTERRUPT, timeout) == b"{}"
    except OSError:
        return False
