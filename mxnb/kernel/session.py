"""One notebook's mxnb: its settings, its cluster, and the last cell's result.

A :class:`MxdistSession` is made once per IPython shell when the extension
loads.  The magics only parse arguments and hand them here.  Its settings are
traitlets, so they can be set like any Jupyter option: ``%config
MxdistSession.timeout = 60`` or ``%mxdist --timeout 60`` in a notebook, or
``c.MxdistSession.timeout = 60`` in an IPython profile's config.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from traitlets import Bool, Enum, Float, Integer, List, Unicode
from traitlets.config import Configurable

from mxnb.errors import ClusterError, RankError
from mxnb.kernel import remote
from mxnb.kernel.background import BackgroundStart
from mxnb.kernel.causes import likely_cause
from mxnb.kernel.cluster import DEFAULT_NP, MxCluster
from mxnb.kernel.live import LiveStrip
from mxnb.kernel.recovery import HangWatch, between_cells, crash_output, settle
from mxnb.kernel.runner import CellResult, CellRun, RankStreamer
from mxnb.kernel.tracing import Tracing
from mxnb.kernel.waitgraph import wait_graph
from mxnb.protocol.ops import BACKENDS
from mxnb.views.outcome import RankResults

__all__ = ["HEADLINES", "MxdistSession", "cost_note"]

#: How a cell that could not finish is announced, by reason.
HEADLINES = {
    "crash": "a rank died",
    "stall": "the cell cannot finish: ranks wait for peers that will not come",
    "timeout": "the cell timed out",
    "interrupt": "the cell was interrupted",
    "lost": "the ranks' answers did not reach the notebook",
}


class MxdistSession(Configurable):
    """The settings and state of ``%%mxdist`` in one IPython shell."""

    ranks = Integer(
        DEFAULT_NP, config=True, help="Ranks started when no cluster runs and a cell gives no -n."
    )
    backend = Enum(
        list(BACKENDS),
        "mpi",
        config=True,
        help="MLX's backend for the ranks: mpi (Open MPI) or ring (TCP sockets between "
        "neighbouring ranks). Changing it restarts running ranks.",
    )
    hostfile = Unicode(
        "",
        config=True,
        help="An Open MPI hostfile: ranks start on its hosts. Empty: this host, or the "
        "Slurm allocation's hosts when SLURM_JOB_ID is set. Changing it restarts running ranks.",
    )
    ip = Unicode(
        "",
        config=True,
        help="The address the controller and probes listen on; empty: chosen from the hosts.",
    )
    mpi_args = List(
        Unicode(), config=True, help="Extra mpiexec options, after mxnb's own (e.g. --mca ...)."
    )
    timeout = Float(
        None,
        allow_none=True,
        config=True,
        help="Seconds a cell may run before control returns with a per-rank report; "
        "None: no limit (hangs are still caught, and the stop button always works).",
    )
    checked = Bool(
        True,
        config=True,
        help="Checked communication: ranks agree on op, shape and dtype before data moves.",
    )
    stall_grace = Float(
        2.0,
        config=True,
        help="Seconds a rank must wait on peers that cannot come before it counts as a hang.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster: MxCluster | None = None
        self.last_result: CellResult | None = None
        self.tracing = Tracing()
        self._lost: str | None = None  # why the last cluster was stopped, told once
        self._lost_n: int | None = None  # its size, reused by the next cell
        self._background: BackgroundStart | None = None
        self._ranks_checked = True  # what the running ranks are set to
        self._ranks_bare = False
        self._cost_told = False  # cost_note is said once per session

    # -- the cluster ---------------------------------------------------------

    def prestart(self, n: int) -> None:
        """Start ``n`` ranks in the background; the next cell or line joins them."""
        if self.cluster is None and self._background is None:
            self._background = BackgroundStart(self._new_cluster(n))

    @property
    def starting(self) -> int | None:
        """The size of a background start still under way, else None."""
        bg = self._background
        return bg.cluster.n if bg is not None and not bg.done else None

    def join_background(self) -> None:
        bg, self._background = self._background, None
        if bg is None:
            return
        if not bg.done:
            print(f"mxdist: waiting for the {bg.cluster.n} ranks starting in the background ...")
        try:
            self.cluster = bg.join()
        except KeyboardInterrupt:
            self._background = bg  # still starting: the next cell waits again
            raise
        except Exception as e:
            print(f"mxdist: the background start of {bg.cluster.n} ranks failed: {e}")
            return
        self._fresh_ranks()

    def _fresh_ranks(self) -> None:
        """What new ranks start with; cells switch it only where it must change."""
        self._ranks_checked, self._ranks_bare = True, False

    def _new_cluster(self, n: int) -> MxCluster:
        return MxCluster(n=n, **_launch_of(self))

    @property
    def running_n(self) -> int | None:
        c = self.cluster
        return c.n if c is not None and c.running else None

    def ensure_cluster(self, n: int | None) -> MxCluster:
        """Reuse the running cluster, or (re)start one with ``n`` ranks."""
        self.join_background()
        if self.cluster is not None and self.cluster.running and self.cluster.job_ended():
            n = n or self.cluster.n  # fresh ranks of the same size, as after a crash in a cell
            self._gone_between_cells(self.cluster)
        running = self.running_n
        want = n if n is not None else (running or self.ranks)
        now = _launch_of(self)
        was = _launch_of(self.cluster) if self.cluster is not None else now
        if running == want and was == now:
            assert self.cluster is not None
            return self.cluster
        if running is not None:
            print(f"mxdist: restarting {_change(running, want, was, now)}; "
                  "variables on the ranks are lost.")  # fmt: skip
            self.stop()
        if self._lost:
            print(f"mxdist: {self._lost}")
            self._lost = self._lost_n = None
        on = "MPI ranks" if self.backend == "mpi" else f"ranks on MLX's {self.backend} backend"
        print(f"mxdist: starting {want} {on} ...", flush=True)
        t0 = time.monotonic()
        self.cluster = self._new_cluster(want)
        try:
            self.cluster.start()
        except BaseException:
            self._lost_n = want  # the next cell tries the size asked for, not the default
            raise
        self._lost_n = None
        self._fresh_ranks()
        if self.cluster.retried:
            print(f"mxdist: started twice: the first time, {self.cluster.retried}")
        print(
            f"mxdist: {want} ranks ready in {time.monotonic() - t0:.1f} s "
            "(names ready on every rank: mx, world, rank, size)"
        )
        return self.cluster

    def restart(self, n: int | None) -> MxCluster:
        n = self.cell_size(n)  # the size running, or the one a failed start asked for
        self.stop()
        return self.ensure_cluster(n)

    def stop(self) -> None:
        try:
            self.join_background()
        except Exception:  # reported by join_background; stop what exists regardless
            pass
        if self.cluster is not None:
            self.cluster.stop()
        self.cluster = None

    def status(self) -> str:
        if self.starting is not None:
            return f"mxdist: {self.starting} ranks starting in the background"
        self.join_background()
        c = self.cluster
        if c is not None and c.running and c.job_ended():
            return (f"mxdist: the {c.n} ranks have ended since the last cell; the next "
                    "%%mxdist cell says how, and starts fresh ones")  # fmt: skip
        return str(c.status()) if c is not None else "mxdist: no cluster running"

    def pull(self, name: str, targets: list[int] | None = None) -> list[Any]:
        cluster = self.cluster
        if cluster is None or not cluster.running:
            raise ClusterError("no cluster running; run a %%mxdist cell first")
        view = cluster.view if targets is None else cluster.client[targets]
        return remote.pull(view, name)

    def _gone_between_cells(self, cluster: MxCluster) -> None:
        """Ranks that ended while no cell ran: say how, stop what is left, and let
        the cell start fresh ranks, as Jupyter starts a kernel that died anew.
        Open MPI ends the job when a rank dies; a cell sent before it has ended
        notices the death itself, as a crash while it ran."""
        output = crash_output(cluster)
        cluster.stop()
        self.cluster = None
        print(f"mxdist: {between_cells(output, cluster.n)}", flush=True)

    # -- one cell ------------------------------------------------------------------

    def cell_size(self, n: int | None) -> int:
        """The ranks a cell runs on: asked for, running, lost by the last cell, or the default."""
        self.join_background()
        return n or self.running_n or self._lost_n or self.ranks

    def run_cell(
        self,
        code: str,
        n: int,
        targets: list[int] | None = None,
        timeout: float | None = None,
        checked: bool | None = None,
        trace: bool = True,
        bare: bool = False,
        viz: bool = False,
    ) -> RankResults | None:
        """Run ``code`` on the ranks; raises :class:`RankError` if it did not finish well.

        ``timeout``: seconds, 0 for no limit, None for the session's setting;
        ``checked``: None for the session's setting.
        """
        cluster = self.ensure_cluster(n)
        checked = self.checked if checked is None else checked
        if checked != self._ranks_checked:
            remote.set_checked(cluster.view, checked)
            self._ranks_checked = checked
        if bare != self._ranks_bare:
            remote.set_bare(cluster.view, bare)
            self._ranks_bare = bare
        view = cluster.view if targets is None else cluster.client[targets]
        timeout = self.timeout if timeout is None else (timeout or None)
        self.tracing.before_cell(cluster, view, record=trace and not bare, keep=viz)
        run = CellRun(view, code, RankStreamer(view.targets))
        live = LiveStrip()
        watch = HangWatch(cluster, self.stall_grace, live)
        why = run.wait(timeout, watch=watch)
        if why is None and any(
            o.error and o.error["ename"] == "EngineError" for o in run.result.outcomes
        ):
            why = "crash"
        if why is None:
            live.done()
            result = self.last_result = run.finish()
            told = self.tracing.after_cell(view, result, show=viz)
            if result.failed:
                here = set(cluster.status().hosts) == {socket.gethostname()}
                cause = likely_cause(result.failed, here=here)
                raise RankError(result, note=told, report=cause)
            self.tracing.check_order(view, result, shown=viz)
            self._tell_cost(result)
            shown = RankResults(result.outcomes)
            return shown if shown else None
        settled = settle(cluster, run, why, watch.diagnosis, watch.lost.missing)
        d = settled.diagnosis
        if d is not None and d.states:  # who waited for whom: a picture that stays
            live.hang(wait_graph(d.states, d.status, d.now, cluster.spread()), d.cause or "")
        else:  # a crash, or lost answers: the strip's last look is no longer true
            live.done()
        result = self.last_result = run.finish()
        result.timed_out = why == "timeout"
        result.interrupted = why == "interrupt"
        note = settled.note
        if settled.cluster_lost:
            self.cluster = None
            self._lost_n = cluster.n
            self._lost = f"the previous ranks were stopped ({HEADLINES[why]})."
            if viz and d is not None and d.states:
                note += self.tracing.show_probed(d.states, cluster.n)
            elif viz:
                note += " No trace is shown: the ranks that recorded it were stopped."
        elif viz:
            note += " " + self.tracing.after_cell(view, result, show=True)
        raise RankError(
            result,
            note=note,
            report=settled.report,
            headline=HEADLINES[why] + (f" after {timeout:g} s" if why == "timeout" else ""),
        )

    def _tell_cost(self, result: CellResult) -> None:
        """Once per session: a loop of small ops ran, and a stopwatch read mxnb's cost too."""
        said = [o.cost for o in result.outcomes if o.cost is not None]
        if said and not self._cost_told:
            self._cost_told = True
            paths = {s.get("path", "python") for s in said}
            path = "python-only" if "python-only" in paths else min(paths)  # "c" < "python"
            print(cost_note(max(s["ops"] for s in said), any(s["checked"] for s in said),
                            any(s["recorded"] for s in said), path))  # fmt: skip


def cost_note(ops: int, checked: bool, recorded: bool, path: str = "c") -> str:
    """What a loop of ``ops`` small ops cost beyond MLX's own time, said once.

    ``path``: where the ranks observed them (see CostPayload): mxnb's op path in
    C costs a fraction of its Python path, which this says.
    """
    who = "mxnb's op path in C" if path == "c" else "mxnb"
    if checked or recorded:
        did = [word for word, on in (("checked", checked), ("recorded", recorded)) if on]
        done = f"{' and '.join(did)} by {who}"
    elif path == "c":
        done = "logged for mxnb's hang reports by its op path in C"
    else:
        done = "logged by mxnb for its hang reports"
    exchange = " and one more exchange between the ranks" if checked else ""
    if path == "c":
        adds = f"about a microsecond{exchange}"
        # 2 ranks on 2 cores, 1 KB, four full runs (bench/README.md, 2026-12-01)
        takes = "up to about twice as long as" if checked else "up to about a third longer than"
        later = " and writes its records after the loop"
    else:
        adds, takes = f"some microseconds of Python{exchange}", "several times as long as"
        later = ""
    note = (
        f"mxdist: this cell ran {ops:,} small mx.distributed ops on a rank, each {done}, "
        f"which adds {adds} to every op{later}. A loop of such ops can take {takes} in plain "
        "MLX: to time MLX itself, run the cell with %%mxdist --bare."
    )
    if path == "python-only":
        note += (" mxnb's op path in C, which costs a fraction of that, is not built here: "
                 "python -m mxnb.rank.fastpath builds it.")  # fmt: skip
    return note + " (Said once per session.)"


#: The settings a cluster is started with, named alike on the session and the
#: cluster; a change of any restarts the ranks.
LAUNCH = ("backend", "hostfile", "ip", "mpi_args")


def _launch_of(owner: MxdistSession | MxCluster) -> dict[str, Any]:
    out = {k: getattr(owner, k) for k in LAUNCH}
    out["mpi_args"] = list(out["mpi_args"])  # a copy: the cluster must not share the session's
    return out


def _where(launch: dict[str, Any]) -> str:
    return f"hostfile {launch['hostfile']}" if launch["hostfile"] else "this host"


def _change(n_was: int, n: int, was: dict[str, Any], now: dict[str, Any]) -> str:
    """``with 4 ranks (was 2)``, ``on the ring backend (was mpi)``, or both; or new hosts."""
    backend_was, backend = was["backend"], now["backend"]
    if (_where(was), was["ip"], was["mpi_args"]) != (_where(now), now["ip"], now["mpi_args"]):
        if _where(was) != _where(now):
            return f"with {n} ranks on {_where(now)} (was {n_was} on {_where(was)})"
        return f"with {n} ranks and the new --ip/--mpi-args (was {n_was})"
    if backend == backend_was:
        return f"with {n} ranks (was {n_was})"
    if n == n_was:
        return f"on the {backend} backend (was {backend_was})"
    return f"with {n} ranks on the {backend} backend (was {n_was} on {backend_was})"
