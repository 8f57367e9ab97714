"""The ``%mxdist`` line magic and ``%%mxdist`` cell magic: arguments only.

The magic parses and checks its arguments before anything starts, then hands
them to the shell's :class:`~mxnb.kernel.session.MxdistSession`, which owns
the cluster, the settings and the last result.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from mxnb.kernel.cluster import DEFAULT_NP
from mxnb.kernel.session import MxdistSession
from mxnb.protocol.cells import header
from mxnb.protocol.ops import BACKENDS

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


_MPI_ARGS = re.compile(r"""--mpi-args(?:=|\s+)(?:"([^"]*)"|'([^']*)')""")


def take_mpi_args(line: str) -> tuple[str, str | None]:
    """Cut a quoted ``--mpi-args '...'`` out of the line (argparse would take its
    options for the magic's own); the line without it, and its text."""
    m = _MPI_ARGS.search(line)
    if m is None:
        return line, None
    text = m.group(1) if m.group(1) is not None else m.group(2)
    return line[: m.start()] + line[m.end() :], text


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
        self.session = MxdistSession(parent=shell)
        if shell is not None and self.session not in shell.configurables:
            shell.configurables.append(self.session)  # %config MxdistSession.timeout = 60

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
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="MLX's backend for the ranks: mpi (default) or ring; a change restarts the "
        "ranks, and later cells keep it",
    )
    @argument(
        "--hostfile",
        default=None,
        metavar="FILE",
        help="start the ranks on the hosts of this Open MPI hostfile ('none': this host "
        "again); a change restarts the ranks, and later cells keep it",
    )
    @argument(
        "--ip",
        default=None,
        metavar="ADDRESS",
        help="the address the controller and probes listen on (default: the interface "
        "that reaches the hosts)",
    )
    @argument(
        "--mpi-args",
        default=None,
        metavar="ARGS",
        help="extra mpiexec options, quoted, e.g. --mpi-args '--mca btl_tcp_if_include "
        "eth1'; a change restarts the ranks, and later starts keep them",
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
        line, mpi_args = take_mpi_args(line)
        args = parse_argstring(self.mxdist, line)
        args.mpi_args = mpi_args if mpi_args is not None else args.mpi_args
        if cell is None:
            return self._line(args)
        if args.action is not None:
            raise UsageError(f"'{args.action}' is for the line magic: use %mxdist {args.action}")
        return self._cell(args, header(self._count(), line) + "\n" + cell)

    def _count(self) -> int:
        """The running cell's execution count (IPython counts on before running it)."""
        n = self.shell.execution_count if self.shell is not None else 1
        return max(1, n - 1)

    def _line(self, args: argparse.Namespace) -> None:
        session = self.session
        configured = self._configure(args)
        action = args.action or (
            "start" if args.np or configured == "launch" else None if configured else "status"
        )
        if action is None:
            return
        if action not in (*ACTIONS, "start"):
            raise UsageError(f"unknown action {action!r}; use one of: {', '.join(ACTIONS)}")
        if args.targets is not None:
            raise UsageError("--targets applies to %%mxdist cells only")
        if args.viz or not args.trace or args.bare:
            raise UsageError("--viz, --no-trace and --bare apply to %%mxdist cells only")
        if action == "status":
            print(session.status())
        elif action == "stop":
            was = session.running_n
            session.stop()
            print("mxdist: cluster stopped" if was else "mxdist: no cluster running")
        elif action == "restart":
            session.restart(args.np)
        else:
            session.ensure_cluster(args.np)

    def _configure(self, args: argparse.Namespace) -> str:
        """Line-magic --timeout / --check set the session defaults.

        Returns "launch" when a setting of how ranks start was given (they
        restart to follow it), "cell" for cell settings, "" for none.
        """
        session = self.session
        changed = []
        launch = self._configure_launch(args)
        if args.timeout is not None:
            session.timeout = args.timeout or None
            changed.append(f"timeout {session.timeout or 'none'}")
        if args.check is not None:
            session.checked = args.check
            changed.append(f"checked communication {'on' if args.check else 'off'}")
        if changed:
            print("mxdist: " + ", ".join(changed))
        return "launch" if launch else "cell" if changed else ""

    def _configure_launch(self, args: argparse.Namespace) -> bool:
        """--backend, --hostfile, --ip, --mpi-args: the running ranks follow at the next start."""
        session = self.session
        if args.backend is not None:
            session.backend = args.backend
        if args.hostfile is not None:
            path = "" if args.hostfile in ("none", "") else os.path.abspath(args.hostfile)
            if path and not os.path.isfile(path):
                raise UsageError(f"no hostfile {args.hostfile}: give an Open MPI hostfile "
                                 "(one host per line, e.g. 'node1 slots=4')")  # fmt: skip
            session.hostfile = path
        if args.ip is not None:
            session.ip = args.ip
        if args.mpi_args is not None:
            session.mpi_args = shlex.split(args.mpi_args)
        return any(v is not None for v in (args.backend, args.hostfile, args.ip, args.mpi_args))

    def _cell(self, args: argparse.Namespace, cell: str) -> Any:
        self._configure_launch(args)
        n = self.session.cell_size(args.np)
        targets = parse_targets(args.targets, n) if args.targets else None
        if args.viz and (args.bare or not args.trace):
            flag = "--bare" if args.bare else "--no-trace"
            raise UsageError(f"--viz shows the trace that {flag} turns off; use one of them")
        return self.session.run_cell(
            cell,
            n,
            targets=targets,
            timeout=args.timeout,
            checked=args.check,
            trace=args.trace,
            bare=args.bare,
            viz=args.viz,
        )
