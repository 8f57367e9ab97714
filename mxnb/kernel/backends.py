"""What starting ranks on each of MLX's backends takes, beyond ``mpiexec``.

Every rank is told its backend in ``MXNB_BACKEND`` (``python -m mxnb.rank``
reads it).  MLX's ring backend also needs a hostfile: a JSON list, in rank
order, of each rank's ``"ip:port"`` addresses.  The ranks share this host,
so each gets one free port on the loopback; the file sits in the cluster's
private, owner-only directory.  Each rank's ``MLX_RANK`` is its MPI rank,
set by the rank itself.
"""

from __future__ import annotations

import json
import os
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


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on the loopback now (held together, so none repeats)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()
