"""The lifecycle of one MPI-backed ipyparallel cluster whose engines run MLX.

One :class:`MxCluster` owns a controller, one ``mpiexec`` job of engines, a
private profile directory and a watchdog that cleans up if the kernel dies.
Every process it starts, it stops by pid.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
from traitlets import Enum, Float, HasTraits, Integer, List, Unicode

from mxnb.errors import ClusterError
from mxnb.kernel import ipp, probes, relay, remote
from mxnb.kernel import openmpi as mpi
from mxnb.kernel.launch import LaunchPlan, ipp_cluster
from mxnb.kernel.placement import Placement, plan
from mxnb.kernel.processes import alive, kill_pids, led_groups, live_groups
from mxnb.kernel.ringwait import likely_cause, ring_waits
from mxnb.kernel.startfail import start_failure
from mxnb.kernel.status import ClusterStatus
from mxnb.protocol.messages import ProbeReply, RankInfo
from mxnb.protocol.ops import BACKENDS
from mxnb.protocol.startup import STEPS, steps_of
from mxnb.protocol.wording import RING_NEEDS

__all__ = ["DEFAULT_NP", "ClusterError", "ClusterStatus", "MxCluster"]

#: Ranks started when ``%%mxdist`` is used without ``-n`` and nothing runs.
DEFAULT_NP = 4


class MxCluster(HasTraits):
    """A controller plus N MLX ranks launched by one ``mpiexec``.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (safe to
    call twice).  Interpreter exit stops it too, and a watchdog process stops
    it if this process is killed.
    """

    n = Integer(DEFAULT_NP, help="Number of MPI ranks (engines) to start.")
    backend = Enum(
        list(BACKENDS),
        "mpi",
        help="MLX's backend for the world group: mpi (Open MPI) or ring (TCP sockets "
        "between neighbouring ranks: on the loopback, or across hosts on the address that "
        "reaches them). mpiexec starts the ranks either way.",
    )
    mpi_args = List(Unicode(), help="Extra options passed to mpiexec, after mxnb's own.")
    hostfile = Unicode(
        "",
        help="An Open MPI hostfile: ranks start on its hosts through mpiexec. Empty: this "
        "host, or the hosts of the Slurm allocation when SLURM_JOB_ID is set.",
    )
    ip = Unicode(
        "",
        help="The address the controller and the ranks' probes listen on. Empty: the "
        "loopback on one host, else the interface that reaches the hosts.",
    )
    start_timeout = Float(60.0, help="Seconds to wait for every rank to register before giving up.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ipp: Any = None
        self._client: Any = None
        self._view: Any = None
        self._ranks: list[RankInfo] = []
        # ipyparallel starts controller and mpiexec each in a session of its
        # own; the controller's forked schedulers outlive it if it is killed
        self._groups: list[int] = []
        self._profile_dir: str | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._mpi: mpi.OpenMPI | None = None
        self._placement: Placement | None = None
        self._here = socket.gethostname()
        #: why the last start was made twice ("" if it was not)
        self.retried = ""

    # -- public API -------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._client is not None

    @property
    def view(self) -> Any:
        """A DirectView on all ranks, in rank order (engine id == rank)."""
        if self._view is None:
            raise ClusterError("no cluster running; start one with %mxdist -n N")
        return self._view

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ClusterError("no cluster running; start one with %mxdist -n N")
        return self._client

    @property
    def profile_dir(self) -> str | None:
        return self._profile_dir

    def pids(self) -> list[int]:
        """Every process this cluster started: controller, mpiexec, ranks."""
        found: list[int] = []
        roots = []
        if self._ipp is not None:
            # a launcher that never started, or was stopped, says -1 (ipyparallel)
            launchers = [self._ipp.controller, *self._ipp.engines.values()]
            roots = [p for p in (getattr(la, "pid", None) for la in launchers)
                     if isinstance(p, int) and p > 0]  # fmt: skip
        for pid in roots:
            found.append(pid)
            try:
                found += [c.pid for c in psutil.Process(pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        found += [r["pid"] for r in self._local_ranks() if r["pid"] not in found]
        return found

    def _local_ranks(self) -> list[RankInfo]:
        """Ranks on this host: only their pids mean anything here."""
        return [r for r in self._ranks if r["host"] == self._here]

    def rank_pids(self, ranks: list[int]) -> list[int]:
        """Process ids of the given ranks, in the same order (on their own hosts)."""
        by_rank = {r["rank"]: r["pid"] for r in self._ranks}
        return [by_rank[r] for r in ranks]

    def spread(self) -> dict[int, str]:
        """rank -> host when the ranks run on more than one host, else empty."""
        hosts = {r["rank"]: r["host"] for r in self._ranks}
        return hosts if len(set(hosts.values())) > 1 else {}

    def ask_probes(
        self, ranks: list[int] | None = None, again: float = 0.0
    ) -> dict[int, ProbeReply | None]:
        """Where each rank is, from its probe (None: it did not answer);
        ``again``: see :func:`probes.ask_all`."""
        chosen = set(ranks) if ranks is not None else None
        addresses = {r["rank"]: r["probe"] for r in self._ranks
                     if chosen is None or r["rank"] in chosen}  # fmt: skip
        return probes.ask_all(addresses, self._key(), again=again)

    def interrupt(self, ranks: list[int]) -> None:
        """KeyboardInterrupt in these ranks: a signal on this host, the probe on others."""
        for r in self._ranks:
            if r["rank"] not in ranks:
                continue
            if r["host"] == self._here:
                try:
                    os.kill(r["pid"], signal.SIGINT)
                except (ProcessLookupError, PermissionError):
                    pass
            else:
                probes.interrupt(r["probe"], self._key())

    def _key(self) -> bytes:
        return bytes(self._client.session.key) if self._client is not None else b""

    def dead_ranks(self) -> list[int]:
        """Ranks whose process is gone (all of them if mpiexec is gone).

        A rank on another host is seen gone only with the job: Open MPI ends
        the whole job when one of its processes dies.
        """
        if not self._ranks:
            return []
        if self.job_ended():
            return [r["rank"] for r in self._ranks]
        return [r["rank"] for r in self._local_ranks() if not alive(r["pid"])]

    def job_ended(self) -> bool:
        """Whether mpiexec has exited: one look (~40 us), cheap enough before each cell."""
        es = self._ipp.engine_set if self._ipp is not None else None
        return es is not None and bool(es.pid) and not alive(es.pid)

    def mpiexec_output(self, lines: int = 25) -> str:
        """The last lines mpiexec and the ranks wrote outside of cells."""
        es = self._ipp.engine_set if self._ipp is not None else None
        text = ipp.launcher_output(es) if es is not None else ""
        return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])

    def start(self) -> MxCluster:
        """Start controller and ranks; verify every rank sees the whole group.

        Started once more if the controller does not relay the ranks' messages:
        it picks its ports before its relays bind them, and another process can
        take one meanwhile (see :mod:`mxnb.kernel.relay`).
        """
        if self.running:
            return self
        if self.n < 1:
            raise ClusterError(f"n must be at least 1, got {self.n}")
        self.retried = ""
        try:
            return self._start()
        except relay.RelayLost as e:
            self.retried = str(e)
        return self._start()

    def _start(self) -> MxCluster:
        self._placement = plan(self.n, self.hostfile, self.ip)
        self._mpi = mpi.find_openmpi()
        self._profile_dir = tempfile.mkdtemp(prefix="mxnb-")
        atexit.register(self.stop)
        try:
            # the watchdog first: a kernel killed halfway through a start
            # leaves nothing behind either (it reads the pid file at the end)
            self._start_watchdog()
            self._launch()
            self._verify()
            self._write_pids()
        except BaseException:
            self.stop()
            raise
        self._started_at = time.time()
        return self

    def stop(self) -> None:
        """Stop everything this cluster started; idempotent."""
        pids = self.pids()
        if self._client is not None:
            try:
                self._client.close(linger=0)
            except Exception:
                pass
        self._client = self._view = None
        groups = live_groups(self._groups, self._profile_dir) if self._profile_dir else []
        if pids or groups:
            kill_pids(pids, groups=groups)
        self._groups = []
        if self._ipp is not None:
            self._ipp.controller = None
            self._ipp.engines = {}
        self._ipp = None
        self._ranks = []
        # Remove the profile before the watchdog: if this process is killed
        # in between, the watchdog (which exits once the profile is gone)
        # still finishes the clean-up.
        if self._profile_dir:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None
        if self._watchdog is not None:
            kill_pids([self._watchdog.pid], grace=1.0)
            self._watchdog.wait()
            self._watchdog = None
        atexit.unregister(self.stop)

    def restart(self, n: int | None = None) -> MxCluster:
        self.stop()
        if n is not None:
            self.n = n
        return self.start()

    def status(self) -> ClusterStatus:
        if not self.running:
            return ClusterStatus(running=False, n=0)
        first = self._ranks[0]
        return ClusterStatus(
            running=True,
            n=len(self._ranks),
            backend=self.backend,
            mpi_library=self._mpi.describe() if self._mpi else "",
            mlx_version=first["mlx_version"],
            hosts=tuple(r["host"] for r in self._ranks),
            placed_by=self._placement.source if self._placement else "this host",
            uptime=time.time() - self._started_at,
            profile_dir=self._profile_dir or "",
        )

    def __enter__(self) -> MxCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps of start() ----------------------------------------------------

    def _launch(self) -> None:
        assert self._mpi is not None and self._placement is not None and self._profile_dir
        self._ipp = ipp_cluster(
            LaunchPlan(
                n=self.n,
                backend=self.backend,
                placement=self._placement,
                mpi=self._mpi,
                profile_dir=self._profile_dir,
                start_timeout=self.start_timeout,
                mpi_args=tuple(self.mpi_args),
            )
        )
        self._ipp.start_cluster_sync()
        self._groups = led_groups(self.pids())
        self._write_pids()
        try:
            self._client = self._ipp.connect_client_sync()
        except Exception as e:
            failure = self._controller_failure()
            if failure is not None:
                raise failure from e
            raise
        self._wait_for_engines()
        self._view = self._client[list(range(self.n))]
        self._view.block = True

    def _wait_for_engines(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        es, controller = self._ipp.engine_set, self._ipp.controller.pid
        checked = looked = 0.0
        while len(self._client.ids) < self.n:
            time.sleep(0.01)
            # whether the controller and mpiexec live, ten times a second: each
            # check reads /proc, and the ranks starting meanwhile need the CPU
            if time.monotonic() - checked < 0.1:
                continue
            checked = time.monotonic()
            failure = self._controller_failure()
            if failure is not None:
                raise failure
            if checked - looked >= 0.5:  # its relays: that reads all of /proc
                looked = checked
                relay.check_relays(controller, self._profile_dir)
            if (es is not None and es.state == "after") or (
                es is not None and es.pid and not alive(es.pid)
            ):
                raise self._start_error(f"mpiexec exited before all {self.n} ranks started.")
            if checked > deadline:
                raise self._start_error(self._not_registered())

    def _not_registered(self) -> str:
        """Which ranks did not register in time, and where each of them is."""
        assert self._client is not None and self._profile_dir is not None
        came = set(self._client.ids)
        missing = [r for r in range(self.n) if r not in came]
        said = (
            f"Only {self.n - len(missing)} of {self.n} ranks registered within "
            f"{self.start_timeout:.0f} s. Where the others are:"
        )
        steps = steps_of(self._profile_dir, missing)
        ring = ring_waits(self.pids()) if self.backend == "ring" else {}
        if ring:
            said = f"MLX's ring did not form: {RING_NEEDS}.\n{said}"
        for r in missing:
            step = steps.get(r)
            where = STEPS[step].format(backend=self.backend) if step else "no word from it yet"
            said += f"\n  rank {r}: {where}" + (f": {ring[r].text}" if r in ring else "")
        cause = likely_cause(ring)
        return said + (f"\nLikely cause: {cause}" if cause else "")

    def _start_error(self, what: str) -> ClusterError:
        """``what`` went wrong, after the sentence a rank or Open MPI said about it."""
        output = self.mpiexec_output()
        why = start_failure(output)
        told = f"mpiexec output:\n{output}" if output.strip() else "mpiexec printed nothing."
        return ClusterError((f"{why}\n" if why else "") + f"{what}\n{told}")

    def _controller_failure(self) -> ClusterError | None:
        """The error to raise if the controller died while ranks were starting."""
        ctl = self._ipp.controller if self._ipp is not None else None
        if ctl is None or not ctl.pid or alive(ctl.pid):
            return None
        output = ctl.get_output(remove=False) if hasattr(ctl, "get_output") else ""
        return ClusterError(
            "the ipyparallel controller exited during start-up; start the cluster again "
            f"(%mxdist -n N).\nIts output:\n{output.strip() or '(none)'}"
        )

    def _verify(self) -> None:
        relay.check_relays(self._ipp.controller.pid, self._profile_dir)  # one that ended late
        info, request = remote.prepare(self._view, self.start_timeout)
        relay.check_output(request, self._profile_dir)
        bad = []
        for eid, r in zip(self._view.targets, info, strict=True):
            if r["size"] != self.n:
                why = (
                    "MLX did not get MPI: is MLX_MPI_LIBNAME the real libmpi?"
                    if self.backend == "mpi"
                    else "MLX did not form its ring"
                )
                bad.append(f"engine {eid}: MLX group size {r['size']}, expected {self.n} ({why})")
            elif r["rank"] != eid:
                bad.append(f"engine {eid} reports MPI rank {r['rank']}")
        if bad:
            raise ClusterError("ranks do not form one MLX group:\n  " + "\n  ".join(bad))
        self._ranks = list(info)

    def _write_pids(self) -> None:
        """Tell the watchdog every process started so far (rewritten as start proceeds)."""
        assert self._profile_dir is not None
        pidfile = os.path.join(self._profile_dir, "mxnb-pids")
        with open(pidfile + ".new", "w") as f:
            # a negative number names a process group (see mxnb.kernel.watchdog)
            f.write("\n".join(str(p) for p in [*self.pids(), *(-g for g in self._groups)]))
        os.replace(pidfile + ".new", pidfile)

    def _start_watchdog(self) -> None:
        assert self._profile_dir is not None
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "mxnb.kernel.watchdog", str(os.getpid()), self._profile_dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
