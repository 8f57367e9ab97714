"""Per-rank state and the names a ``%%mxdist`` cell starts with."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

_world: Any = None
_started = time.time()


def set_world(group: Any) -> None:
    """Remember the world group that the entry point initialised."""
    global _world
    _world = group


def world() -> Any:
    """The world group; initialises MLX here if the entry point did not."""
    global _world
    if _world is None:
        import mlx.core as mx

        _world = mx.distributed.init(strict=True, backend="mpi")
    return _world


def warm_up() -> None:
    """Everything a rank can set up before the controller is reachable.

    The entry point calls this while the controller is still starting, so
    imports and the observers' set-up overlap with it instead of following
    it.  Every step is idempotent: :func:`prepare` calls it again once the
    rank's IPython shell exists, which only then gets the trace's cell events.
    """
    import ipyparallel.engine.app  # noqa: F401  (the heaviest import of a rank)

    from mxnb.engine import monitor, probe, trace

    group = world()
    monitor.install(group)
    trace.install()  # after monitor: per-rank array views, see mxnb.engine.trace
    profile = os.environ.get("IPP_PROFILE_DIR")
    if profile:
        probe.start(profile, group.rank())


def prepare() -> dict[str, Any]:
    """Put ``mx``, ``world``, ``rank``, ``size`` into the engine's namespace.

    Returns what the kernel needs to check that the ranks form one MPI job:
    each rank's MPI rank and group size, as MLX sees them.
    """
    import mlx.core as mx
    from IPython import get_ipython

    from mxnb.engine import monitor

    group = world()
    warm_up()  # done already by the entry point; here the shell exists for trace's events
    shell = get_ipython()
    if shell is not None:
        shell.user_ns.update(mx=mx, world=group, rank=group.rank(), size=group.size())
        shell.events.register("pre_run_cell", monitor.monitor.pre_cell)
        shell.events.register("post_run_cell", monitor.monitor.post_cell)
    return {
        "rank": group.rank(),
        "size": group.size(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "backend": "mpi",
        "mpi_library": os.environ.get("MLX_MPI_LIBNAME", ""),
        "mlx_version": mx.__version__,
        "started": _started,
    }


def fetch(name: str) -> Any:
    """A name from this rank's namespace, made picklable (MLX -> NumPy)."""
    import mlx.core as mx
    import numpy as np
    from IPython import get_ipython

    shell = get_ipython()
    ns = shell.user_ns if shell is not None else {}
    if name not in ns:
        raise NameError(f"name {name!r} is not defined on rank {world().rank()}")
    value = ns[name]
    if isinstance(value, mx.array):
        return np.array(value)
    return value
