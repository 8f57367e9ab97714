"""One rank's mxnb: the world group and every part that observes its ops.

A :class:`Runtime` is made once per rank process, by the entry point, with
the world group MLX initialised.  It owns the group records, the op hooks,
the op log (checks, hang state), the evaluation entry points, the trace
recorder and the probe server; :meth:`Runtime.install` puts them in place
and :meth:`Runtime.uninstall` takes them out again, so no part keeps state
of its own at module level.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from mxnb.protocol.messages import COST_PAYLOAD, ORDER_PAYLOAD, CostPayload, OrderPayload
from mxnb.protocol.net import LOOPBACK, address_towards
from mxnb.protocol.ops import nbytes
from mxnb.rank import fastpath
from mxnb.rank.entries import EvalEntries
from mxnb.rank.groups import Groups
from mxnb.rank.hooks import Hooks
from mxnb.rank.numbering import number_cells
from mxnb.rank.oplog import OpLog
from mxnb.rank.probe_server import ProbeServer
from mxnb.rank.recorder import Recorder

__all__ = ["Runtime", "current", "probe_ip", "start"]

#: A cell that runs this many ops on a rank, most of them under SMALL_BYTES,
#: is a loop whose stopwatch reads mxnb's cost per op too (see _tell_cost):
#: at 1 KB that is 1.3-1.7x MLX's own time on 2 ranks here through mxnb's op
#: path in C, 1.5-4.5x through its Python path; at 1 MB 0-10% (bench/README.md).
MANY_OPS = 1000
SMALL_BYTES = 1 << 20


class Runtime:
    """Everything mxnb keeps on one rank."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.started = time.time()
        self.groups = Groups(world)
        self.hooks = Hooks()
        self.oplog = OpLog(self.hooks, self.groups)
        self.entries = EvalEntries(self.oplog)
        self.recorder = Recorder(self.groups)
        self.fast = fastpath.attach(self.oplog, self.hooks, self.entries, self.recorder)
        self.probe: ProbeServer | None = None
        self._probe_port = 0  # kept across uninstall/install: the kernel knows it
        self._shell: Any = None
        self._unnumber: Callable[[], None] | None = None
        self._taken_before = 0  # ops the C path took before this cell

    def install(self, probe_ip: str | None = None) -> None:
        """Observe ops, evaluations and splits; serve the probe.  Idempotent.

        Called while the controller is still starting, so the set-up overlaps
        with it instead of following it.
        """
        self.groups.install()
        self.hooks.install()
        self.oplog.compile.install()
        self.oplog.vmap.install()
        if not self.oplog.bare:
            self.hooks.set_logger(self.oplog)
        self.entries.install()
        self.set_recording(self.recorder.enabled)
        if probe_ip and self.probe is None:
            self.probe = ProbeServer(
                probe_ip, self.world.rank(), self.oplog.state, port=self._probe_port
            )
            self.probe.start()
            self._probe_port = self.probe.port

    def attach(self, shell: Any) -> None:
        """Give the rank's IPython shell the cell's names and the cell events; once."""
        import mlx.core as mx

        shell.user_ns.update(mx=mx, world=self.world, rank=self.world.rank(),
                             size=self.world.size())  # fmt: skip
        if self._shell is shell:
            return
        self._shell = shell
        _unhide_debugger()
        _freeze_start_up()
        self._unnumber = number_cells(shell)
        # the C path's notes first; the recorder settles a cell's arrays before
        # the op log forgets its ops
        shell.events.register("pre_run_cell", self.oplog.sync)
        shell.events.register("pre_run_cell", self._count_from_here)
        shell.events.register("pre_run_cell", self.recorder.start_cell)
        shell.events.register("pre_run_cell", self.oplog.pre_cell)
        shell.events.register("post_run_cell", self.oplog.sync)
        shell.events.register("post_run_cell", self.recorder.end_cell)
        shell.events.register("post_run_cell", self._tell_order)
        shell.events.register("post_run_cell", self._tell_cost)
        shell.events.register("post_run_cell", self.oplog.post_cell)

    def _tell_order(self, *_: Any) -> None:
        """Say, with the cell's reply, which groups ran collectives out of call order.

        It rides in the reply the kernel waits for anyway (IPython's payload),
        and only when there is something to say: a cell costs nothing more.
        """
        late = self.recorder.late
        if late and self._shell is not None:
            said: OrderPayload = {"source": ORDER_PAYLOAD, "groups": late}
            self._shell.payload_manager.write_payload(said)

    def _count_from_here(self, *_: Any) -> None:
        self._taken_before = self.fast.module.counts()[0] if self.fast is not None else 0

    def _tell_cost(self, *_: Any) -> None:
        """Say, with the cell's reply, that it ran a loop of small ops mxnb watched.

        Read from what the op log keeps anyway, once the cell has ended: the
        ops themselves cost nothing more.
        """
        oplog, ops = self.oplog, self.hooks.seq
        if oplog.bare or ops < MANY_OPS or self._shell is None:
            return
        kept = list(oplog.cell_ops)  # the most recent ops: what a loop is made of
        small = sum(nbytes(r.shape, r.dtype) < SMALL_BYTES for r in kept)
        if 2 * small >= len(kept) > 0:
            if self.fast is None:
                path = "python-only"
            else:
                taken = self.fast.module.counts()[0] - self._taken_before
                path = "c" if 2 * taken >= ops else "python"
            said: CostPayload = {"source": COST_PAYLOAD, "ops": ops, "checked": oplog.checked,
                                 "recorded": oplog.recorder is not None, "path": path}  # fmt: skip
            self._shell.payload_manager.write_payload(said)

    def uninstall(self) -> None:
        """Put MLX's own functions back and stop serving the probe."""
        self.oplog.sync()
        shell, self._shell = self._shell, None
        if self._unnumber is not None:
            self._unnumber()
            self._unnumber = None
        if shell is not None:
            for event, fn in (
                ("pre_run_cell", self.oplog.sync),
                ("pre_run_cell", self._count_from_here),
                ("post_run_cell", self.oplog.sync),
                ("pre_run_cell", self.recorder.start_cell),
                ("pre_run_cell", self.oplog.pre_cell),
                ("post_run_cell", self.recorder.end_cell),
                ("post_run_cell", self._tell_order),
                ("post_run_cell", self._tell_cost),
                ("post_run_cell", self.oplog.post_cell),
            ):
                try:
                    shell.events.unregister(event, fn)
                except ValueError:
                    pass
        if self.probe is not None:
            self.probe.stop()
            self.probe = None
        # recording stays switched as the kernel set it: install() restores it
        self.oplog.recorder = None
        self.hooks.set_logger(None)
        self.entries.uninstall()
        self.oplog.compile.uninstall()
        self.oplog.vmap.uninstall()
        self.hooks.uninstall()
        self.groups.uninstall()

    def set_recording(self, on: bool, keep: bool = False) -> bool:
        """Turn trace recording on or off; ``keep``: hold values (see Recorder.keep).

        The op log hands ops to the recorder, so nothing is recorded in bare mode.
        """
        self.oplog.sync()
        rec = self.recorder
        rec.enabled = bool(on)
        rec.keep = bool(keep)
        if rec.enabled:
            self.oplog.recorder = rec
        else:
            self.oplog.recorder = None
        if self.fast is not None:
            self.fast.update()
        return rec.enabled


#: The module ipykernel imports to offer a debugger (see :func:`hide_debugger`).
_DEBUGGER = "debugpy"


def hide_debugger() -> None:
    """Keep ipykernel from importing its debugger while this rank's engine starts.

    ipykernel imports debugpy as it makes a kernel, to serve debug requests;
    an ipyparallel engine has no channel for them, so the debugger is never
    used, and its import cost each rank 0.13 s of CPU in a cold start, where
    four ranks share two cores (issue 18).  A module set to None in
    ``sys.modules`` cannot be imported; ipykernel takes that as debugpy not
    installed.  :meth:`Runtime.attach` undoes it before the first cell, so a
    cell can import debugpy itself.
    """
    sys.modules.setdefault(_DEBUGGER, None)


def _unhide_debugger() -> None:
    if _DEBUGGER in sys.modules and sys.modules[_DEBUGGER] is None:
        del sys.modules[_DEBUGGER]


def _freeze_start_up() -> None:
    """Keep the engine's own objects out of the full collections of the user's code.

    A rank holds some 70,000 Python objects (IPython, ipyparallel, zmq) before
    its first cell, four times a standalone MLX script's heap, and each of
    Python's full collections scans them all: one took 31 ms here in a
    20,000-op cell (issue 18), a pause a standalone loop would not have.
    Frozen (``gc.freeze``), they are left out, and a full collection scans only
    what cells made (1.5 ms in the same cell).  What it gives up, as CPython
    documents: garbage cycles among these objects are never collected.  Once
    per process: a later attach must not freeze what the user's cells made.
    """
    import gc

    if not gc.get_freeze_count():
        gc.freeze()


class _Process:
    """The runtime of this process, once the entry point (or a test) made it."""

    runtime: Runtime | None = None


def probe_ip() -> str | None:
    """Where this rank's probe listens: the address that reaches the kernel.

    None outside an mxnb cluster (a rank started by hand, a test).
    """
    if not os.environ.get("IPP_PROFILE_DIR"):
        return None
    return address_towards(os.environ.get("MXNB_KERNEL_IP", LOOPBACK))


def start(world: Any, probe_at: str | None = None) -> Runtime:
    """Make this process's runtime (once) and install it."""
    if _Process.runtime is None:
        _Process.runtime = Runtime(world)
    _Process.runtime.install(probe_at)
    return _Process.runtime


def current() -> Runtime:
    """This process's runtime; initialises MLX over MPI here if the entry point did not."""
    if _Process.runtime is None:
        import mlx.core as mx

        start(mx.distributed.init(strict=True, backend="mpi"))
    assert _Process.runtime is not None
    return _Process.runtime
