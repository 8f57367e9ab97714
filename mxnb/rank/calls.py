"""The functions the kernel runs on a rank (through ipyparallel's ``apply``).

They are the rank side's whole interface to the kernel: each takes plain
arguments and returns one of the typed messages of :mod:`mxnb.protocol`.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from mxnb.protocol.messages import RankInfo, TraceReport
from mxnb.rank.recorder import collect
from mxnb.rank.runtime import current, probe_ip

__all__ = [
    "collect_trace",
    "prepare",
    "reset_checks",
    "set_bare",
    "set_checked",
    "set_recording",
    "value_of",
]


def prepare() -> RankInfo:
    """Put ``mx``, ``world``, ``rank``, ``size`` into the engine's namespace.

    Returns what the kernel needs to check that the ranks form one MPI job:
    each rank's MPI rank and group size, as MLX sees them.
    """
    import mlx.core as mx
    from IPython import get_ipython

    rt = current()
    rt.install(probe_ip())
    shell = get_ipython()
    if shell is not None:
        rt.attach(shell)
    return {
        "rank": rt.world.rank(),
        "size": rt.world.size(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "backend": os.environ.get("MXNB_BACKEND", "mpi"),
        "mpi_library": os.environ.get("MLX_MPI_LIBNAME", ""),
        "mlx_version": mx.__version__,
        "started": rt.started,
        "probe": rt.probe.address if rt.probe is not None else "",
    }


def value_of(name: str) -> Any:
    """A name from this rank's namespace, made picklable (MLX -> NumPy)."""
    import mlx.core as mx
    from IPython import get_ipython

    shell = get_ipython()
    ns = shell.user_ns if shell is not None else {}
    if name not in ns:
        raise NameError(f"name {name!r} is not defined on rank {current().world.rank()}")
    value = ns[name]
    if isinstance(value, mx.array):
        import numpy as np  # here: a rank imports NumPy only when it needs it

        return np.array(value)
    return value


def collect_trace() -> TraceReport:
    """The last finished cell's trace on this rank, values encoded."""
    rt = current()
    return collect(rt.recorder, rt.groups)


def set_recording(on: bool, keep: bool = False) -> bool:
    return current().set_recording(on, keep)


def set_checked(on: bool) -> None:
    current().oplog.set_checked(on)


def set_bare(on: bool) -> None:
    current().oplog.set_bare(on)


def reset_checks() -> list[tuple[int, int]]:
    """After an abandoned wait: drop pending exchanges, fresh communicators.

    Returns the (source, bytes) of orphaned messages this rank discarded.
    """
    return current().oplog.reset_checks()
