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

from mxnb.cluster import DEFAULT_NP, MxCluster
from mxnb.errors import MxnbError
from mxnb.render import RankError, RankResults, rank_set
from mxnb.runner import CellResult, RankStreamer, run_cell

__all__ = ["MxdistMagics", "parse_targets"]

ACTIONS = ("status", "stop", "restart")


class CellTimeout(MxnbError):
    """The cell did not finish on every rank within the timeout."""


class CellInterrupted(MxnbError):
    """The user interrupted the cell."""


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value}")
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
        #: Seconds a cell may run before control returns; None waits forever.
        self.timeout: float | None = None
        self.last_result: CellResult | None = None

    # -- cluster lifecycle --------------------------------------------------

    def _running_n(self) -> int | None:
        c = self.cluster
        return c.n if c is not None and c.running else None

    def ensure_cluster(self, n: int | None) -> MxCluster:
        """Reuse the running cluster, or (re)start one with ``n`` ranks."""
        running = self._running_n()
        want = n if n is not None else (running or DEFAULT_NP)
        if running == want:
            assert self.cluster is not None
            return self.cluster
        if running is not None:
            print(
                f"mxdist: restarting with {want} ranks (was {running}); "
                "variables on the ranks are lost."
            )
            self.stop()
        print(f"mxdist: starting {want} MPI ranks ...", flush=True)
        t0 = time.monotonic()
        self.cluster = MxCluster(n=want)
        self.cluster.start()
        print(
            f"mxdist: {want} ranks ready in {time.monotonic() - t0:.1f} s "
            "(names ready on every rank: mx, world, rank, size)"
        )
        return self.cluster

    def stop(self) -> None:
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
        type=_positive_float,
        default=None,
        help="seconds to wait for the cell before returning control",
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
        action = args.action or ("start" if args.np else "status")
        if action not in (*ACTIONS, "start"):
            raise UsageError(f"unknown action {action!r}; use one of: {', '.join(ACTIONS)}")
        if args.targets is not None:
            raise UsageError("--targets applies to %%mxdist cells only")
        if action == "status":
            c = self.cluster
            print(c.status() if c is not None else "mxdist: no cluster running")
        elif action == "stop":
            was = self._running_n()
            self.stop()
            print("mxdist: cluster stopped" if was else "mxdist: no cluster running")
        elif action == "restart":
            n = args.np or self._running_n() or DEFAULT_NP
            self.stop()
            self.ensure_cluster(n)
        else:
            self.ensure_cluster(args.np)

    def _cell(self, args: argparse.Namespace, cell: str) -> Any:
        n = args.np or self._running_n() or DEFAULT_NP
        targets = parse_targets(args.targets, n) if args.targets else None
        cluster = self.ensure_cluster(n)
        view = cluster.view if targets is None else cluster.client[targets]
        timeout = args.timeout if args.timeout is not None else self.timeout
        result = run_cell(
            view,
            cell,
            timeout=timeout,
            streamer=RankStreamer(view.targets),
            rank_pids=cluster.rank_pids(view.targets),
        )
        self.last_result = result
        return self._finish(result, timeout)

    def _finish(self, result: CellResult, timeout: float | None) -> Any:
        if result.failed:
            raise RankError(result)
        if result.interrupted and result.unfinished:
            raise CellInterrupted(
                f"interrupted; {rank_set(result.unfinished)} did not stop. If a rank "
                "is blocked in a collective, run %mxdist restart (rank state is lost)."
            )
        if result.interrupted:
            raise KeyboardInterrupt
        if result.timed_out:
            raise CellTimeout(
                f"still running after {timeout:g} s on {rank_set(result.unfinished)}. "
                "A collective or recv that some rank never reaches waits forever; "
                "run %mxdist restart to get a fresh cluster (rank state is lost)."
            )
        shown = RankResults(result.outcomes)
        return shown if shown else None
