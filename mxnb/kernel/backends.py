"""What starting ranks on each of MLX's backends takes, beyond ``mpiexec``.

Every rank is told its backend in ``MXNB_BACKEND`` (``python -m mxnb.rank``
reads it).  MLX's ring backend also needs a hostfile: a JSON list, in rank
order, of each rank's ``"ip:port"`` addresses.  The ranks share this host,
so each gets one free port on the loopback, from below the range the
system hands out by itself; the file sits in the cluster's private,
owner-only directory.  Each rank's ``MLX_RANK`` is its MPI rank, set by the
rank itself.
"""

from __future__ import annotations

import json
import os
import random
import socket

__all__ = ["backend_env"]


def backend_env(backend: str, n: int, directory: str | None) -> dict[str, str]:
    """The environment that puts ``n`` ranks on ``backend``."""
    if backend != "ring":
        return {"MXNB_BACKEND": backend}
    assert directory is not None
    path = os.path.join(directory, "mlx-ring-hosts.json")
    with open(path, "w") as f:
        json.dump([[f"127.0.0.1:{port}"] for port in _free_ports(n)], f)
    return {"MXNB_BACKEND": "ring", "MLX_HOSTFILE": path}


#: Where the ring's ports are drawn from: below the ports the system hands out itself.
RING_PORTS = (20000, 32768)


def _free_ports(n: int, span: tuple[int, int] = RING_PORTS) -> list[int]:
    """``n`` distinct loopback ports, free now and held together while chosen.

    They are released before the ranks bind them, about a second later, while
    the controller and the ranks' other sockets take ports of their own.  A
    port the system picked (``bind`` to port 0, or an outgoing connection)
    could be one of them again, and a ring whose rank 0 is answered by the
    controller never forms.  The system picks only from its ephemeral range,
    so the ring's ports come from below it.
    """
    low, high = span[0], min(span[1], _ephemeral_low())
    candidates = random.sample(range(low, high), min(high - low, 64 * n)) if high > low else []
    held: list[socket.socket] = []
    try:
        for port in candidates:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                break
        while len(held) < n:  # no room below the ephemeral range: let the system pick
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _ephemeral_low() -> int:
    """The lowest port the system picks by itself (Linux; 49152 elsewhere, as on macOS)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152
