"""Rank entry point: initialise MLX over MPI, then become an ipyparallel engine.

Order matters.  ipyparallel's MPI engines import mpi4py, which calls MPI_Init;
MLX would then fail to initialise MPI (or quietly fall back to a group of
size 1, so ``all_sum`` returns each rank's own input).  Initialising MLX first
makes mpi4py find MPI already running and leave it alone.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import tempfile
import time

from mxnb.protocol.startup import enter, fault_file
from mxnb.protocol.wording import RING_NEEDS

#: Seconds a rank waits for the controller's connection file.
CONNECTION_WAIT = float(os.environ.get("MXNB_START_TIMEOUT", "60"))


def await_connection_info(timeout: float = CONNECTION_WAIT) -> None:
    """Hand ipyparallel the controller's engine connection info once it is whole.

    mxnb starts the ranks together with the controller.  The controller
    writes its connection file without an atomic rename, so a rank that read
    it as soon as it appeared could see half of it; a rank reads it here until
    it parses, then passes it on in ``$IPP_CONNECTION_INFO``.
    """
    if os.environ.get("IPP_CONNECTION_INFO") or not os.environ.get("IPP_PROFILE_DIR"):
        return  # the launcher passed the info itself, or this is not mxnb's cluster
    cid = os.environ.get("IPP_CLUSTER_ID", "")
    name = f"ipcontroller-{cid}-engine.json" if cid else "ipcontroller-engine.json"
    path = os.path.join(os.environ["IPP_PROFILE_DIR"], "security", name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            if "key" in json.loads(text):
                os.environ["IPP_CONNECTION_INFO"] = text
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    sys.stderr.write(f"mxnb rank: no controller connection file {path} after {timeout:.0f} s\n")
    sys.exit(4)


def local_profile_dir() -> None:
    """Give a rank on another host a profile directory of its own.

    The cluster's private profile directory exists only on the kernel's host;
    elsewhere the engine would refuse to start.  Open MPI's per-process
    session directory holds it, so it goes when the job does, however the
    rank ends; the connection info travels in ``$IPP_CONNECTION_INFO``.
    """
    wanted = os.environ.get("IPP_PROFILE_DIR")
    if not wanted or os.path.isdir(wanted):
        return
    session = os.environ.get("OMPI_FILE_LOCATION") or tempfile.mkdtemp(prefix="mxnb-rank-")
    here = os.path.join(session, "mxnb-profile")
    os.makedirs(here, mode=0o700, exist_ok=True)
    os.environ["IPP_PROFILE_DIR"] = here


def check_kernel_reachable(timeout: float = 5.0) -> None:
    """On another host, fail at once with the reason if the controller is out of reach.

    Otherwise the engine would retry its registration until the kernel gives
    up, and the user would learn only that ranks did not come.
    """
    import socket

    from mxnb.protocol.net import address_towards, is_loopback

    kernel_ip = os.environ.get("MXNB_KERNEL_IP", "")
    info = os.environ.get("IPP_CONNECTION_INFO", "")
    if not kernel_ip or is_loopback(kernel_ip) or not info:
        return
    port = int(json.loads(info)["registration"])
    try:
        address_towards(kernel_ip)
        socket.create_connection((kernel_ip, port), timeout=timeout).close()
    except OSError as e:
        rank = os.environ.get("OMPI_COMM_WORLD_RANK", "?")
        sys.stderr.write(
            f"mxnb rank {rank} on host {socket.gethostname()}: cannot reach the kernel's "
            f"controller at {kernel_ip}:{port} ({e.strerror or e}); start the ranks with "
            "--ip set to an address of the kernel's host that every host reaches\n"
        )
        sys.stderr.flush()
        sys.exit(5)


#: How a backend is named in what a rank says.
NAMES = {"mpi": "MPI", "ring": "ring"}
#: What each backend needs, said when MLX cannot start it.
NEEDS = {
    "mpi": "MLX supports Open MPI only; MLX_MPI_LIBNAME must name its real libmpi shared library.",
    "ring": f"{RING_NEEDS}.",
}


def main() -> None:
    # the kernel's own profile directory, where a rank on its host notes each step
    here, rank = os.environ.get("IPP_PROFILE_DIR"), os.environ.get("OMPI_COMM_WORLD_RANK", "0")
    check_kernel_reachable()
    enter("mlx", here, rank)
    import mlx.core as mx

    backend = os.environ.get("MXNB_BACKEND", "mpi")
    alone = os.environ.get("OMPI_COMM_WORLD_SIZE") == "1"
    written = None  # (module, path) of a ring hostfile the ranks wrote (several hosts)
    try:
        if backend == "ring" and not alone:
            # the ring learns its rank from MLX_RANK; mpiexec numbers the ranks
            os.environ["MLX_RANK"] = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
            if not os.environ.get("MLX_HOSTFILE"):  # see mxnb.rank.ringhosts
                from mxnb.rank import ringhosts

                enter("addresses", here, rank)
                shared = os.environ["MLX_HOSTFILE"] = ringhosts.write_hostfile()
                written = (ringhosts, shared)
                enter("mlx", here, rank)
        if alone:
            # MLX's backends refuse a world of one process; its default
            # group of size 1 behaves the same for every collective
            world = mx.distributed.init()
        else:
            world = mx.distributed.init(strict=True, backend=backend)
    except Exception as e:
        sys.stderr.write(
            f"mxnb rank: MLX could not initialise its {NAMES.get(backend, backend)} backend: {e}\n"
            f"mxnb rank: {NEEDS.get(backend, '')}\n"
        )
        sys.stderr.flush()
        sys.exit(3)
    finally:
        if written:
            written[0].remove(written[1])

    # the heaviest import of a rank, and the op hooks, while the controller starts
    enter("import", here, rank)
    from mxnb.protocol.ippimport import import_ipyparallel

    engine = import_ipyparallel("ipyparallel.engine.app")

    from mxnb.rank import runtime

    runtime.start(world, runtime.probe_ip())
    runtime.hide_debugger()
    # a rank that MLX or MPI kills (a heap corrupted by mismatched buffers, an
    # abort) writes where each of its Python threads was, for the crash report
    # (mxnb.kernel.lastwords); set after MPI's own handlers, which it then runs
    faulthandler.enable(file=fault_file(here, rank) or sys.__stderr__, all_threads=True)
    local_profile_dir()
    enter("connect", here, rank)
    await_connection_info()
    enter("engine", here, rank)
    engine.main()


if __name__ == "__main__":
    main()
