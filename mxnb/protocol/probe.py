"""The probe: where a rank answers "where are you?", and how the answer is framed.

Each rank serves a TCP socket on the one address that reaches the kernel
(the loopback when every rank shares the kernel's host).  Nobody else may
ask or interrupt a rank, so each exchange is authenticated with the
cluster's key: the rank sends a fresh nonce, the kernel answers with an
HMAC of it and its command, and only then does the rank act.  A state
request is answered with one JSON :class:`~mxnb.protocol.messages.ProbeReply`;
an interrupt request raises ``KeyboardInterrupt`` in the rank, as the stop
button would, where no signal can be sent (a rank on another host).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from mxnb.protocol.messages import ProbeReply

__all__ = [
    "ASK",
    "INTERRUPT",
    "NONCE_BYTES",
    "PROOF_BYTES",
    "decode_reply",
    "encode_reply",
    "join_address",
    "proof",
    "split_address",
]

#: The commands a kernel may send after its proof.
ASK, INTERRUPT = b"?", b"!"
NONCE_BYTES = 16
PROOF_BYTES = hashlib.sha256().digest_size


def proof(key: bytes, nonce: bytes, command: bytes) -> bytes:
    """What shows the kernel holds the cluster's key, bound to this nonce and command."""
    return hmac.new(key, b"mxnb-probe:" + nonce + command, hashlib.sha256).digest()


def join_address(ip: str, port: int) -> str:
    return f"{ip}:{port}"


def split_address(address: str) -> tuple[str, int]:
    ip, _, port = address.rpartition(":")
    return ip, int(port)


def encode_reply(reply: ProbeReply) -> bytes:
    return json.dumps(reply, default=str).encode()


def decode_reply(data: bytes) -> ProbeReply:
    value: Any = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a probe reply is a JSON object")
    return value  # type: ignore[return-value]
