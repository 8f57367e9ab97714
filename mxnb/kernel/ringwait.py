"""Where MLX's ring stands when ranks on it did not start: each rank's two links.

MLX forms its ring inside ``mx.distributed.init``: each rank listens at its
own address for its left neighbour and connects to its right one.  A refused
connection is retried for about 30 s and then raised, but an accept waits
without limit, and MLX holds the rank's interpreter while it waits, so the
rank itself cannot say anything.  A ring that cannot close (a peer that never
came, a port some other program answered on) would leave the kernel knowing
only that no rank registered.  So when the start times out, the kernel reads
the sockets of each rank on its own host from outside, with the hostfile it
wrote.  Ranks spread over several hosts wrote their hostfile themselves
(:mod:`mxnb.rank.ringhosts`): their links are not read, and the steps the
ranks noted say where they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import psutil

__all__ = ["Links", "likely_cause", "links", "ring_waits"]


def _address(entry: list[str] | str) -> tuple[str, int]:
    text = entry[0] if isinstance(entry, list) else entry
    host, _, port = text.rpartition(":")
    return host, int(port)


class Links(NamedTuple):
    """One rank's two links of the ring, as its sockets show them."""

    rank: int
    right: int  # the neighbour it connects to
    right_at: str  # the address it connects to: the right neighbour's, per the hostfile
    to_right: bool  # connected there
    from_left: bool  # its left neighbour has connected to it
    text: str  # ``connected to rank 0 at ...; waits for rank 1 to connect at ...``

    @property
    def up(self) -> bool:
        return self.to_right and self.from_left


def links(rank: int, nodes: list[list[str]], tcp: Sequence[object]) -> Links:
    """Rank ``rank``'s two links of the ring (MLX's hostfile ``nodes``), from its
    sockets ``tcp`` (psutil's connections)."""
    size = len(nodes)
    left, right = (rank - 1) % size, (rank + 1) % size
    mine, theirs = _address(nodes[rank]), _address(nodes[right])
    conns = [c for c in tcp if getattr(c, "laddr", None)]
    est = [c for c in conns if c.status == psutil.CONN_ESTABLISHED and c.raddr]
    listening = any(c.status == psutil.CONN_LISTEN and c.laddr.port == mine[1] for c in conns)
    to_right = any((c.raddr.ip, c.raddr.port) == theirs for c in est)
    from_left = any(c.laddr.port == mine[1] for c in est)
    where = f"{theirs[0]}:{theirs[1]}"
    out = f"{'' if to_right else 'not '}connected to rank {right} at {where}"
    at = f"{mine[0]}:{mine[1]}"
    if from_left:
        into = f"rank {left} has connected to it at {at}"
    elif listening:
        into = f"waits for rank {left} to connect at {at}"
    else:
        into = f"does not listen at {at} for rank {left}"
    return Links(rank, right, where, to_right, from_left, f"{out}; {into}")


def ring_waits(pids: Sequence[int]) -> dict[int, Links]:
    """The links of each rank among ``pids`` whose two links are not both up;
    none when the ring formed (or the ranks are not on MLX's ring)."""
    found: dict[int, Links] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            env = proc.environ()
            if "MLX_HOSTFILE" not in env or "OMPI_COMM_WORLD_RANK" not in env:
                continue
            rank = int(env["OMPI_COMM_WORLD_RANK"])
            with open(env["MLX_HOSTFILE"]) as f:
                nodes = json.load(f)
            state = links(rank, nodes, proc.net_connections(kind="tcp"))
            if not state.up:
                found[rank] = state
        except (psutil.Error, OSError, ValueError):
            continue  # gone, or not ours to read: said by what is missing
    return found


def likely_cause(waits: dict[int, Links]) -> str | None:
    """A rank connected to its neighbour's address while that neighbour still waits
    for it: the connection went to another program listening there."""
    for r in sorted(waits):
        mine = waits[r]
        theirs = waits.get(mine.right)
        if mine.to_right and theirs is not None and not theirs.from_left:
            return (
                f"rank {r} connected to {mine.right_at}, rank {mine.right}'s address, but "
                f"rank {mine.right} never got the connection: another program answers "
                "there. Start the ranks again (%mxdist restart): mxnb picks new ports."
            )
    return None
