"""MLX's ring hostfile when the ranks span hosts, written by the ranks themselves.

MLX's ring needs every rank's ``"ip:port"`` before ``init``, and each rank
listens at its own.  On one host the kernel picks free loopback ports for
all (:mod:`mxnb.kernel.backends`); across hosts only a rank can tell which
port of its own host is free, and which of its addresses the others reach.
So each rank takes the address on its route to the kernel (the hosts'
network, as MPI's TCP transport uses it), a free port there from below the
system's own range, and the ranks all-gather them over MPI, which
``mpiexec`` has already wired up.  MLX itself uses no MPI on the ring, so
initialising MPI first is safe here (unlike on the ``mpi`` backend, see
:mod:`mxnb.rank.__main__`).

The file goes in Open MPI's per-process session directory, which Open MPI
removes when the job ends however the rank ends, and is deleted as soon as
MLX has read it.
"""

from __future__ import annotations

import json
import os
import tempfile

from mxnb.protocol.net import LOOPBACK, address_towards, free_ports

__all__ = ["remove", "write_hostfile"]


def write_hostfile(comm: object | None = None) -> str:
    """Share this rank's ring address with every rank; the path of the file MLX reads.

    ``comm``: an mpi4py communicator of the whole job (its world by default).
    """
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    me = address_towards(os.environ.get("MXNB_KERNEL_IP", LOOPBACK))
    while True:
        (port,) = free_ports(1, me)
        nodes = comm.allgather(f"{me}:{port}")  # type: ignore[attr-defined]
        # ranks on one host choose at the same time and may draw the same free
        # port; every rank sees the same list, so all draw again together
        if len(set(nodes)) == len(nodes):
            break
    session = os.environ.get("OMPI_FILE_LOCATION")
    if session:
        os.makedirs(session, mode=0o700, exist_ok=True)
    where = tempfile.mkdtemp(prefix="mxnb-ring-", dir=session)  # owner-only
    path = os.path.join(where, "hosts.json")
    with open(path, "w") as f:
        json.dump([[node] for node in nodes], f)
    return path


def remove(path: str) -> None:
    """Delete the file and its directory once MLX has read it."""
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
