"""How one cluster's ranks are launched: the ipyparallel Cluster, its mpiexec line and environment.

Everything that depends on where the ranks run (one host, a hostfile, a
Slurm allocation) and on MLX's backend comes together here, from one
:class:`LaunchPlan`; :mod:`mxnb.kernel.cluster` owns the lifecycle.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from mxnb.kernel import openmpi as mpi
from mxnb.kernel.backends import backend_env
from mxnb.kernel.placement import Placement
from mxnb.protocol.net import LOOPBACK, free_range

__all__ = [
    "BLAS_SPIN",
    "CONTROLLER_POOL",
    "HEARTBEAT_MS",
    "HEART_TOLERANCE_S",
    "LaunchPlan",
    "blas_env",
    "ipp_cluster",
]

#: Controller heartbeat period (ms); ipyparallel's default is 3000.  The
#: controller counts an engine as registered one to two periods after its
#: heart first answers, so this is paid at every start; idle, a beat every
#: 100 ms costs the controller and ranks ~2.6% of one core (measured: 1.5% at
#: 200 ms, 5% at 50 ms, which started only ~0.05 s faster than 100 ms).
HEARTBEAT_MS = 100
#: How long (log2 of CPU cycles) an idle worker thread of OpenBLAS, NumPy's
#: BLAS, spins before it sleeps; its default, 28, is about 0.1 s.  Its workers
#: start, and spin, as NumPy is imported, which every rank and the controller
#: do as they start: 0.1 s of CPU each, on cores the start already fills
#: (issue 18).  MLX does not use OpenBLAS; the number of threads stays.
BLAS_SPIN = "4"
#: Ports in the controller's pool: it binds at least 14 (16 with its default
#: scheduler depth); any beyond the pool it would pick as before.
CONTROLLER_POOL = 32
#: Seconds without an answer after which the controller gives a rank up (as
#: ipyparallel's default of 10 missed beats at the old 200 ms period).
HEART_TOLERANCE_S = 2.0


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a start needs, decided before anything runs."""

    n: int
    backend: str
    placement: Placement
    mpi: mpi.OpenMPI
    profile_dir: str
    start_timeout: float
    mpi_args: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        """What every rank is started with, beyond Open MPI's own variables."""
        where = self.placement
        return {
            **mpi.launch_env(
                self.mpi,
                where.spans_hosts,
                where.subnet if where.spans_hosts else "",
                hostfile=bool(where.hostfile),
            ),
            **backend_env(self.backend, self.n, self.profile_dir, where.spans_hosts),
            **blas_env(),
            "MXNB_START_TIMEOUT": str(self.start_timeout),
            "MXNB_KERNEL_IP": where.ip,
        }

    def mpiexec_args(self, environment: dict[str, str]) -> list[str]:
        where = self.placement
        # ranks on other hosts get only what is named (and Open MPI's own)
        forward = [*environment, "IPP_CLUSTER_ID", "IPP_PROFILE_DIR"]
        if where.spans_hosts:
            forward.append("IPP_CONNECTION_INFO")
        return mpi.mpiexec_args(
            self.n,
            forward,
            hostfile=where.hostfile,
            one_host=not where.spans_hosts and not os.environ.get("SLURM_JOB_ID"),
            extra=list(self.mpi_args),
        )


def blas_env() -> dict[str, str]:
    """OpenBLAS's idle spin cut short, unless the user set it (either of its two names)."""
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ or "GOTO_THREAD_TIMEOUT" in os.environ:
        return {}
    return {"OPENBLAS_THREAD_TIMEOUT": BLAS_SPIN}


def _config(plan: LaunchPlan) -> Any:
    from traitlets.config import Config

    cfg = Config()
    es = cfg.MPIEngineSetLauncher
    es.engine_cmd = [sys.executable, "-m", "mxnb.rank"]
    es.mpi_cmd = [str(plan.mpi.mpiexec)]
    # The nanny is a second Python process per rank that relays signals;
    # mxnb signals ranks by pid, and its start-up cost ~0.25 s of CPU per rank.
    # An engine gives up its registration after 5 s by default, sooner than
    # the kernel's start timeout: the kernel, which can say where each rank
    # is, should be the one to end a start that hangs.
    es.engine_args = [
        "--IPEngine.enable_nanny=False",
        f"--IPEngine.timeout={plan.start_timeout + 5:g}",
    ]
    es.environment = plan.environment()
    es.mpi_args = plan.mpiexec_args(es.environment)
    es.stop_seconds_until_kill = 2
    cfg.LocalControllerLauncher.controller_cmd = [sys.executable, "-m", "mxnb.controller"]
    cfg.LocalControllerLauncher.environment = blas_env()
    cfg.LocalControllerLauncher.stop_seconds_until_kill = 2
    return cfg


def ipp_cluster(plan: LaunchPlan) -> Any:
    """The ipyparallel Cluster (controller plus one mpiexec job of engines), not started."""
    from mxnb.protocol.ippimport import import_ipyparallel

    Cluster = import_ipyparallel().Cluster
    from ipyparallel.cluster.launcher import LocalControllerLauncher, MPIEngineSetLauncher

    # ipyparallel logs each engine exit (with its whole log) as a warning;
    # mxnb reports stops and crashes itself, so keep its logger silent.
    quiet = logging.getLogger("mxnb.ipyparallel")
    quiet.setLevel(logging.CRITICAL)
    quiet.propagate = False
    # the controller's ports, where no port the system picks can be one (its
    # internal ones are on the loopback whatever the address); none free: its own
    pool = free_range(CONTROLLER_POOL, [plan.placement.ip, LOOPBACK])
    return Cluster(
        n=plan.n,
        profile_dir=plan.profile_dir,
        # launchers as classes, and no profile config to look for (the profile
        # directory is a new, empty one): ipyparallel would otherwise scan every
        # installed package's entry points and import its ipcluster app first,
        # while nothing has started yet (0.02-0.03 s of CPU here; the scans
        # grow with the packages installed)
        controller_launcher_class=LocalControllerLauncher,
        engine_launcher_class=MPIEngineSetLauncher,
        load_profile=False,
        controller_ip=plan.placement.ip,
        # The controller counts an engine as registered only after its
        # heartbeat is seen; at the default 3 s period that is most of a
        # cold start.
        controller_args=[
            *([f"--IPController.ports={pool[0]}-{pool[-1]}"] if pool else []),
            f"--HeartMonitor.period={HEARTBEAT_MS}",
            "--HeartMonitor.max_heartmonitor_misses="
            f"{round(HEART_TOLERANCE_S * 1000 / HEARTBEAT_MS)}",
        ],
        delay=0,
        # On one host, ranks start together with the controller and read its
        # connection file themselves once it is complete (mxnb.rank.__main__)
        # instead of waiting here until it is written; ranks on other hosts
        # cannot read it, so there it travels with them.
        send_engines_connection_env=plan.placement.spans_hosts,
        shutdown_atexit=False,
        engine_timeout=int(plan.start_timeout),
        config=_config(plan),
        log=quiet,
    )
