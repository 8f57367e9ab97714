"""The ``%mxdist`` line magic and ``%%mxdist`` cell magic.

The magic parses and checks its arguments before anything starts, keeps one
:class:`~mxnb.cluster.MxCluster` per IPython shell, and hands cells to the
runner.  Rendering of results and errors lives in :mod:`mxnb.render`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from mxnb import viz
from mxnb.background import BackgroundStart
from mxnb.cluster import DEFAULT_NP, MxCluster
from mxnb.recovery import Watcher, settle
from mxnb.render import RankError, RankResults
from mxnb.runner import CellResult, CellRun, RankStreamer
from mxnb.settings import Settings

__all__ = ["MxdistMagics", "parse_targets"]

ACTIONS = ("status", "stop", "restart")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of ranks >= 1, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of ranks >= 1, got {value}")
    return value


def _timeout(text: str) -> float:
    """Seconds > 0, or 'none' (no limit), which is stored as 0."""
    if text.strip().lower() == "none":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0 or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0 or 'none', got {value}")
    return value


def parse_targets(spec: str, size: int) -> list[int]:
    """``"0,2"``, ``"1-3"``, ``"all"`` -> sorted ranks, each in ``0..size-1``."""
    spec = spec.strip()
    if spec == "all":
        return list(range(size))
    ranks: set[int] = set()
    allowed = f"ranks 0..{size - 1}, as '0,2' or '1-3' or 'all'"
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                chosen = range(lo, hi + 1)
            else:
                chosen = range(int(part), int(part) + 1)
        except ValueError:
            raise UsageError(f"--targets {spec!r}: expected {allowed}") from None
        if not chosen:
            raise UsageError(f"--targets {spec!r}: empty range; expected {allowed}")
        for r in chosen:
            if not 0 <= r < size:
                raise UsageError(f"--targets {spec!r}: rank {r} is out of range; {allowed}")
            ranks.add(r)
    return sorted(ranks)


@magics_class
class MxdistMagics(Magics):
    """Run cells on every rank of an MLX-over-MPI cluster."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.cluster: MxCluster | None = None
        self.settings = Settings()
        self.last_result: CellResult | None = None
        self._lost: str | None = None  # why the last cluster was stopped, told once
        self._lost_n: int | None = None  # its size, reused by the next cell
        self._engines_fresh()
        self._background: BackgroundStart | None = None

    # -- cluster lifecycle --------------------------------------------------

    def _engines_fresh(self) -> None:
        """What new ranks start with; cells switch it only where it must change."""
        self._engines_checked = True
        self._engines_bare = False

    def prestart(self, n: int) -> None:
        """Start ``n`` ranks in the background; the next cell or line joins them."""
        if self.cluster is None and self._background is None:
            self._background = BackgroundStart(MxCluster(n=n))

    def _join_background(self) -> None:
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
        self._engines_fresh()

    def _running_n(self) -> int | None:
        c = self.cluster
        return c.n if c is not None and c.running else None

    def ensure_cluster(self, n: int | None) -> MxCluster:
        """Reuse the running cluster, or (re)start one with ``n`` ranks."""
        self._join_background()
        running = self._running_n()
        want = n if n is not None else (running or self.settings.np)
        if running == want:
            assert self.cluster is not None
            return self.cluster
        if running is not None:
            print(
                f"mxdist: restarting with {want} ranks (was {running}); "
                "variables on the ranks are lost."
            )
            self.stop()
        if self._lost:
            print(f"mxdist: {self._lost}")
            self._lost = self._lost_n = None
        print(f"mxdist: starting {want} MPI ranks ...", flush=True)
        t0 = time.monotonic()
        self.cluster = MxCluster(n=want)
        self.cluster.start()
        self._engines_fresh()
        print(
            f"mxdist: {want} ranks ready in {time.monotonic() - t0:.1f} s "
            "(names ready on every rank: mx, world, rank, size)"
        )
        return self.cluster

    def stop(self) -> None:
        try:
            self._join_background()
        except Exception:  # reported by _join_background; stop what exists regardless
            pass
        if self.cluster is not None:
            self.cluster.stop()
        self.cluster = None

    # -- the magic ------------------------------------------------------------

    @magic_arguments()
    @argument(
        "action",
        nargs="?",
        default=None,
        help="line magic only: status (default), stop, restart",
    )
    @argument(
        "-n",
        "--np",
        type=_positive_int,
        default=None,
        help=f"number of MPI ranks (default: the running cluster, else {DEFAULT_NP})",
    )
    @argument(
        "--targets",
        default=None,
        help="run only on these ranks, e.g. 0,2 or 1-3 (not for collectives)",
    )
    @argument(
        "--timeout",
        type=_timeout,
        default=None,
        help="seconds before control returns with a per-rank report, or 'none'; "
        "on the line magic it sets the session default",
    )
    @argument(
        "--check",
        dest="check",
        action="store_const",
        const=True,
        default=None,
        help="checked communication: ranks agree on op, shape, dtype first (default)",
    )
    @argument(
        "--no-check",
        dest="check",
        action="store_const",
        const=False,
        help="turn checked communication off (for this cell, or the session on the line)",
    )
    @argument(
        "--viz",
        action="store_true",
        help="after the cell, show what every rank held before and after each op",
    )
    @argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="do not record this cell's mx.distributed ops (nothing for --viz or mxnb.show)",
    )
    @argument(
        "--bare",
        action="store_true",
        help="plain MLX speed for this cell: no trace, no checks, no op log "
        "(a hang then ends only with --timeout or the stop button, without a cause)",
    )
    @line_cell_magic
    def mxdist(self, line: str, cell: str | None = None) -> Any:
        """Run a cell on every MPI rank, with MLX distributed initialised.

        ``%%mxdist [-n N] [--targets R] [--timeout S]`` runs the cell;
        ``%mxdist status|stop|restart`` and ``%mxdist -n N`` manage the cluster.
        """
        args = parse_argstring(self.mxdist, line)
        if cell is None:
            return self._line(args)
        if args.action is not None:
            raise UsageError(f"'{args.action}' is for the line magic: use %mxdist {args.action}")
        return self._cell(args, cell)

    def _line(self, args: argparse.Namespace) -> None:
        configured = self._configure(args)
        action = args.action or ("start" if args.np else None if configured else "status")
        if action is None:
            return
        bg = self._background
        if action == "status" and bg is not None and not bg.done:
            print(f"mxdist: {bg.cluster.n} ranks starting in the background")
            return
        self._join_background()
        if action not in (*ACTIONS, "start"):
            raise UsageError(f"unknown action {action!r}; use one of: {', '.join(ACTIONS)}")
        if args.targets is not None:
            raise UsageError("--targets applies to %%mxdist cells only")
        if args.viz or not args.trace or args.bare:
            raise UsageError("--viz, --no-trace and --bare apply to %%mxdist cells only")
        if action == "status":
            c = self.cluster
            print(c.status() if c is not None else "mxdist: no cluster running")
        elif action == "stop":
            was = self._running_n()
            self.stop()
            print("mxdist: cluster stopped" if was else "mxdist: no cluster running")
        elif action == "restart":
            n = args.np or self._running_n() or self.settings.np
            self.stop()
            self.ensure_cluster(n)
        else:
            self.ensure_cluster(args.np)

    def _configure(self, args: argparse.Namespace) -> bool:
        """Line-magic --timeout / --check set the session defaults."""
        changed = []
        if args.timeout is not None:
            self.settings.timeout = args.timeout or None
            changed.append(f"timeout {self.settings.timeout or 'none'}")
        if args.check is not None:
            self.settings.checked = args.check
            changed.append(f"checked communication {'on' if args.check else 'off'}")
        if changed:
            print("mxdist: " + ", ".join(changed))
        return bool(changed)

    def _cell(self, args: argparse.Namespace, cell: str) -> Any:
        self._join_background()
        n = args.np or self._running_n() or self._lost_n or self.settings.np
        targets = parse_targets(args.targets, n) if args.targets else None
        cluster = self.ensure_cluster(n)
        if args.viz and (args.bare or not args.trace):
            flag = "--bare" if args.bare else "--no-trace"
            raise UsageError(f"--viz shows the trace that {flag} turns off; use one of them")
        checked = self.settings.checked if args.check is None else args.check
        if checked != self._engines_checked:
            from mxnb.engine.monitor import set_checked

            cluster.view.apply_sync(set_checked, checked)
            self._engines_checked = checked
        if args.bare != self._engines_bare:
            from mxnb.engine.monitor import set_bare

            cluster.view.apply_sync(set_bare, args.bare)
            self._engines_bare = args.bare
        view = cluster.view if targets is None else cluster.client[targets]
        timeout = self.settings.timeout if args.timeout is None else (args.timeout or None)
        viz.before_cell(self, cluster, view, record=args.trace and not args.bare)
        run = CellRun(view, cell, RankStreamer(view.targets))
        watcher = Watcher(cluster, self.settings.stall_grace)
        why = run.wait(timeout, watch=watcher)
        if why is None and any(
            o.error and o.error["ename"] == "EngineError" for o in run.result.outcomes
        ):
            why = "crash"
        if why is None:
            result = self.last_result = run.finish()
            viz.after_cell(self, view, result, show=args.viz)
            if result.failed:
                raise RankError(result)
            shown = RankResults(result.outcomes)
            return shown if shown else None
        settled = settle(cluster, run, why, watcher.diagnosis)
        result = self.last_result = run.finish()
        result.timed_out = why == "timeout"
        result.interrupted = why == "interrupt"
        if settled.cluster_lost:
            self.cluster = None
            self._lost_n = cluster.n
            self._lost = f"the previous ranks were stopped ({HEADLINES[why]})."
        raise RankError(
            result,
            note=settled.note,
            report=settled.report,
            headline=HEADLINES[why] + (f" after {timeout:g} s" if why == "timeout" else ""),
        )


HEADLINES = {
    "crash": "a rank died",
    "stall": "the cell cannot finish: ranks wait for peers that will not come",
    "timeout": "the cell timed out",
    "interrupt": "the cell was interrupted",
}
