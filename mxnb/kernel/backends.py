"""What starting ranks on each of MLX's backends takes, beyond ``mpiexec``.

Every rank is told its backend in ``MXNB_BACKEND`` (``python -m mxnb.rank``
reads it).  MLX's ring backend also needs a hostfile: a JSON list, in rank
order, of each rank's ``"ip:port"`` addresses.  When the ranks share this
host, the kernel writes it: one free loopback port per rank (see
:func:`~mxnb.protocol.net.free_ports`), in the cluster's private,
owner-only directory, where :mod:`mxnb.kernel.ringwait` reads it back if
the ring does not form.  When they span hosts, only each rank knows which
of its host's ports is free: the ranks write the file themselves
(:mod:`mxnb.rank.ringhosts`).  Each rank's ``MLX_RANK`` is its MPI rank,
set by the rank itself.
"""

from __future__ import annotations

import json
import os

from mxnb.protocol.net import LOOPBACK, free_ports

__all__ = ["backend_env"]


def backend_env(
    backend: str, n: int, directory: str | None, spans_hosts: bool = False
) -> dict[str, str]:
    """The environment that puts ``n`` ranks on ``backend``."""
    if backend != "ring" or spans_hosts:
        return {"MXNB_BACKEND": backend}
    assert directory is not None
    path = os.path.join(directory, "mlx-ring-hosts.json")
    with open(path, "w") as f:
        json.dump([[f"{LOOPBACK}:{port}"] for port in free_ports(n)], f)
    return {"MXNB_BACKEND": "ring", "MLX_HOSTFILE": path}
