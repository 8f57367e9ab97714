"""Where MLX's ring stands when ranks on it did not start: each rank's two links.

MLX forms its ring inside ``mx.distributed.init``: each rank listens at its
own address for its left neighbour and connects to its right one.  A refused
connection is retried for about 30 s and then raised, but an accept waits
without limit, and MLX holds the rank's interpreter while it waits, so the
rank itself cannot say anything.  A ring that cannot close (a peer that never
came, a port some other program answered on) would leave the kernel knowing
only that no rank registered.  The ring runs on one host, the kernel's, so
the kernel reads each rank's sockets from outside when the start times out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import psutil

__all__ = ["links", "ring_waits"]


def _address(entry: list[str] | str) -> tuple[str, int]:
    text = entry[0] if isinstance(entry, list) else entry
    host, _, port = text.rpartition(":")
    return host, int(port)


def links(rank: int, nodes: list[list[str]], tcp: Sequence[object]) -> tuple[bool, str]:
    """Whether rank ``rank``'s two links of the ring (MLX's hostfile ``nodes``) are up,
    from its sockets ``tcp`` (psutil's connections), and how they stand: a clause
    after "rank N"."""
    size = len(nodes)
    left, right = (rank - 1) % size, (rank + 1) % size
    mine, theirs = _address(nodes[rank]), _address(nodes[right])
    conns = [c for c in tcp if getattr(c, "laddr", None)]
    est = [c for c in conns if c.status == psutil.CONN_ESTABLISHED and c.raddr]
    listening = any(c.status == psutil.CONN_LISTEN and c.laddr.port == mine[1] for c in conns)
    to_right = any((c.raddr.ip, c.raddr.port) == theirs for c in est)
    from_left = any(c.laddr.port == mine[1] for c in est)
    where = f"{theirs[0]}:{theirs[1]}"
    out = (
        f"is connected to rank {right} at {where}"
        if to_right
        else f"is not connected to rank {right} at {where}"
    )
    at = f"{mine[0]}:{mine[1]}"
    if from_left:
        into = f"rank {left} has connected to it at {at}"
    elif listening:
        into = f"it waits for rank {left} to connect at {at}"
    else:
        into = f"it does not listen at {at} for rank {left}"
    return to_right and from_left, f"{out}, and {into}"


def ring_waits(pids: Sequence[int]) -> list[str]:
    """``rank 1 is connected to rank 0 at ..., and ...`` for each rank among ``pids``
    whose ring links are not both up; none when the ring formed (or is not MLX's)."""
    found: dict[int, str] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            env = proc.environ()
            if "MLX_HOSTFILE" not in env or "OMPI_COMM_WORLD_RANK" not in env:
                continue
            rank = int(env["OMPI_COMM_WORLD_RANK"])
            with open(env["MLX_HOSTFILE"]) as f:
                nodes = json.load(f)
            up, state = links(rank, nodes, proc.net_connections(kind="tcp"))
            if not up:
                found[rank] = f"rank {rank} {state}"
        except (psutil.Error, OSError, ValueError):
            continue  # gone, or not ours to read: said by what is missing
    return [found[r] for r in sorted(found)]
