"""Each benchmark measures mxnb and its baseline in the same run.

Machines here are noisy, so every result is a ratio of times taken side by
side (medians, or the median of paired ratios), never an absolute time
compared with a number from elsewhere.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw_mpi.py"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def mpiexec_cmd(
    n: int, hostfile: str = "", extra: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """The same mpiexec, library and flags mxnb uses, for the raw baseline.

    With a hostfile, as mxnb starts ranks on its hosts (TCP on the subnet
    that reaches them).
    """
    from mxnb.kernel import openmpi as mpi
    from mxnb.kernel.placement import plan

    found = mpi.find_openmpi()
    where = plan(n, hostfile)
    env = mpi.launch_env(found, where.spans_hosts, where.subnet if where.spans_hosts else "",
                         hostfile=bool(hostfile))  # fmt: skip
    args = mpi.mpiexec_args(n, env, hostfile=where.hostfile, one_host=not where.spans_hosts,
                            extra=list(extra))  # fmt: skip
    return [str(found.mpiexec), "-n", str(n), *args], {**os.environ, **env}


def raw_start(n: int, hostfile: str = "", extra: tuple[str, ...] = ()) -> float:
    """Seconds for ``mpiexec -n N python raw_mpi.py start`` (MLX init + one all_sum)."""
    cmd, env = mpiexec_cmd(n, hostfile, extra)
    t = time.perf_counter()
    subprocess.run([*cmd, sys.executable, str(RAW), "start"], env=env, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    return time.perf_counter() - t


def raw_allsum(n: int, nbytes: int, reps: int, backend: str = "mpi") -> float:
    return _raw(n, backend, "allsum", str(nbytes), str(reps))


class Standalone:
    """The standalone loop as a job that stays up (``raw_mpi.py serve``).

    The machine's speed drifts within a second (1 MB all_sum: 276-384 us in
    one process), so a baseline taken by a fresh job seconds before the
    notebook's cell compares two different moments.  This job times its loop
    right before and right after each notebook measurement instead; its
    ranks wait in blocking reads meanwhile.
    """

    def __init__(self, n: int, timeout: float = 120.0) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="mxnb-bench-")
        self.n, self.timeout = n, timeout
        for r in range(n):
            os.mkfifo(os.path.join(self.dir, f"in{r}"), 0o600)
        cmd, env = mpiexec_cmd(n)
        self.job = subprocess.Popen([*cmd, sys.executable, str(RAW), "serve", self.dir], env=env,
                                    stdin=subprocess.DEVNULL)  # fmt: skip

    def _tell(self, line: str) -> None:
        """Write ``line`` to every rank once it waits for it (a FIFO has no
        reader until the rank opens it: ENXIO, try again)."""
        deadline = time.monotonic() + self.timeout
        for r in range(self.n):
            while True:
                try:
                    fd = os.open(os.path.join(self.dir, f"in{r}"), os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError:
                    if self.job.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the standalone job did not take {line!r}") from None
                    time.sleep(0.002)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

    def allsum(self, nbytes: int, reps: int) -> float:
        """Seconds per op of the job's ``raw_mpi.loop_allsum`` (slowest rank)."""
        import json

        out = os.path.join(self.dir, "out.json")
        self._tell(f"{nbytes} {reps}")
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(out):
            if self.job.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the standalone job gave no time")
            time.sleep(0.02)
        with open(out) as f:
            seconds = json.load(f)["seconds"]
        os.unlink(out)
        return seconds

    def close(self) -> None:
        import shutil

        try:
            if self.job.poll() is None:
                self._tell("quit")
                self.job.wait(30)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.job.terminate()  # mpiexec, by pid: it ends its ranks
            try:
                self.job.wait(15)
            except subprocess.TimeoutExpired:
                self.job.kill()
                self.job.wait(15)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Standalone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_step(n: int, reps: int) -> float:
    """Median seconds of ``raw_mpi.timed_step`` (a compiled training step) standalone."""
    return _raw(n, "mpi", "step", str(reps))


def _raw(n: int, backend: str, *args: str) -> float:
    import json
    import tempfile

    from mxnb.kernel.backends import backend_env

    cmd, env = mpiexec_cmd(n)
    with tempfile.TemporaryDirectory() as d:
        env = {**env, **backend_env(backend, n, d)}
        out = subprocess.run(
            [*cmd, sys.executable, str(RAW), *args],
            env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


#: A stock ipyparallel MPI cluster, as its documentation starts one, with the same
#: mpiexec, flags and environment mxnb uses (root, oversubscription, MLX's libmpi)
#: and a private profile directory.
STOCK = """
import ipyparallel as ipp
from traitlets.config import Config

cfg = Config()
cfg.MPIEngineSetLauncher.mpi_cmd = {mpi_cmd!r}
cfg.MPIEngineSetLauncher.mpi_args = {mpi_args!r}
cfg.MPIEngineSetLauncher.environment = {env!r}
cluster = ipp.Cluster(engines="mpi", n={n}, profile_dir={profile!r}, config=cfg)
rc = cluster.start_and_connect_sync()
print(rc[:].apply_sync(lambda: 1))
"""


@contextmanager
def _fresh_kernel(name: str, timeout: float) -> Iterator[Callable[[str], float]]:
    """A kernel started and ready; yields ``run(code)``, which runs quietly and
    returns its seconds (failing if the code did), and shuts the kernel down after."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()

    def run(code: str) -> float:
        t = time.perf_counter()
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)
        took = time.perf_counter() - t
        assert reply["content"]["status"] == "ok", reply["content"]
        return took

    try:
        kc.wait_for_ready(timeout=60)
        yield run
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def _settle(profile: str, grace: float = 5.0) -> None:
    """Stop what is left of the stock cluster of ``profile``, so that the next start is
    timed on an idle machine.

    Its engine nannies outlive its stop and its kernel by about 5 s (they are
    no kernel's children then, so they are found by the profile in their
    environment); a start timed meanwhile shared the cores with them.
    """
    import psutil

    from mxnb.kernel.processes import kill_pids

    left = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("IPP_PROFILE_DIR") == profile:
                left.append(p.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    kill_pids(left, grace=grace)


def stock_cold_start(n: int) -> float:
    """Fresh kernel ready -> first result of a stock ``ipyparallel.Cluster(engines="mpi")``."""
    import shutil
    import tempfile

    from mxnb.kernel import openmpi as mpi

    found = mpi.find_openmpi()
    env = mpi.launch_env(found)
    profile = tempfile.mkdtemp(prefix="mxnb-bench-stock-")
    code = STOCK.format(mpi_cmd=[str(found.mpiexec)], mpi_args=mpi.mpiexec_args(n, env), env=env,
                        n=n, profile=profile)  # fmt: skip
    try:
        with _fresh_kernel("python3", timeout=180) as run:
            took = run(code)
            run("cluster.stop_cluster_sync()")
        _settle(profile)
        return took
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def engine_import_floor(n: int) -> float:
    """Seconds no start of ``n`` engines can beat on this machine: ``n`` times the CPU
    time of importing an ipyparallel engine, spread over every core."""
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    costs = []
    for _ in range(3):
        before = cpu()
        subprocess.run([sys.executable, "-c", "import ipyparallel.engine.app"], check=True,
                       stdin=subprocess.DEVNULL)  # fmt: skip
        costs.append(cpu() - before)
    return n * median(costs) / (os.cpu_count() or 1)


def kernel_cold_start(n: int, kernel: str = "python3", pause: float = 0.0) -> float:
    """Fresh kernel ready -> result of the first ``%%mxdist -n N`` cell.

    With the ``python3`` kernel the clock includes ``%load_ext mxnb``.  The
    ``mxnb`` kernel loads the extension itself and starts its ranks in the
    background (``MXNB_PRESTART``); ``pause`` seconds pass before the cell,
    as when a reader reads the notebook's first lines, and are not counted.
    """
    cell = f"%%mxdist -n {n}\nprint(mx.distributed.all_sum(mx.ones(3)).tolist())"
    with _fresh_kernel(kernel, timeout=120) as run:
        time.sleep(pause)
        return (run("%load_ext mxnb") if kernel == "python3" else 0.0) + run(cell)


class Shell:
    """An in-process IPython shell with mxnb, for warm-cell measurements."""

    def __init__(self) -> None:
        from IPython.testing.globalipapp import start_ipython

        self.ip = start_ipython()
        self.ip.run_line_magic("load_ext", "mxnb")
        self.session = self.ip.magics_manager.registry["MxdistMagics"].session

    def cell(self, code: str, line: str = "") -> Any:
        return self.ip.run_cell_magic("mxdist", line, code)

    def start(self, n: int, backend: str = "mpi") -> None:
        self.ip.run_line_magic("mxdist", f"-n {n} --backend {backend}")

    def restart(self) -> None:
        self.ip.run_line_magic("mxdist", "restart")

    def stop(self) -> None:
        self.ip.run_line_magic("mxdist", "stop")


def warm_cell(shell: Shell, reps: int) -> tuple[float, float]:
    """(trivial %%mxdist cell, raw DirectView.execute of the same code), medians."""
    import contextlib
    import io

    view = shell.session.cluster.view
    ours, raw = [], []
    for _ in range(5):
        shell.cell("x = 1")
        view.execute("x = 1", block=True)
    for _ in range(reps):
        with contextlib.redirect_stdout(io.StringIO()):
            t = time.perf_counter()
            shell.cell("x = 1")
            ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        view.execute("x = 1", block=True)
        raw.append(time.perf_counter() - t)
    return median(ours), median(raw)


def cell_allsum(
    shell: Shell, nbytes: int, reps: int, line: str, spin: float = 0.0, observe: str = ""
) -> float:
    """Median all_sum time inside %%mxdist (slowest rank), with the given flags."""
    return _cell(shell, f"timed_allsum(mx, world, {nbytes}, {reps}, {spin!r}, {observe!r})", line)


def cell_loop(shell: Shell, nbytes: int, reps: int, line: str) -> float:
    """Seconds per op of ``raw_mpi.loop_allsum`` inside %%mxdist (slowest rank)."""
    return _cell(shell, f"loop_allsum(mx, world, {nbytes}, {reps})", line)


def cell_step(shell: Shell, reps: int, line: str) -> float:
    """Median compiled training step inside %%mxdist (slowest rank), with the given flags."""
    return _cell(shell, f"timed_step(mx, {reps})", line)


def _cell(shell: Shell, call: str, line: str) -> float:
    import mxnb

    shell.cell(
        "import importlib.util as _u\n"
        f"_s = _u.spec_from_file_location('raw_mpi', {str(RAW)!r})\n"
        "_m = _u.module_from_spec(_s); _s.loader.exec_module(_m)\n"
        f"bench_med = _m.{call}\n",
        line,
    )
    return max(mxnb.pull("bench_med"))
