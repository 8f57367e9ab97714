"""The probe: where a rank answers "where are you?", and how the answer is framed.

Each rank serves a Unix socket in the cluster's private (0700) profile
directory; the kernel connects, the rank writes one JSON
:class:`~mxnb.protocol.messages.ProbeReply` and closes.  Both sides agree
here on the socket's path and the encoding.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mxnb.protocol.messages import ProbeReply

__all__ = ["decode_reply", "encode_reply", "socket_path"]


def socket_path(profile_dir: str, rank: int) -> str:
    return os.path.join(profile_dir, f"probe-{rank}.sock")


def encode_reply(reply: ProbeReply) -> bytes:
    return json.dumps(reply, default=str).encode()


def decode_reply(data: bytes) -> ProbeReply:
    value: Any = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a probe reply is a JSON object")
    return value  # type: ignore[return-value]
