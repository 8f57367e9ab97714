"""Where MLX's ring stands, read from a real rank's sockets while MLX's init waits.

Rank 1 of a 2-rank ring connects to rank 0 first, then waits for rank 0 to
connect back.  Here "rank 0" is a listening socket of the test that accepts
nothing: a port some other program answers on.  MLX's init never returns,
and the rank cannot say so itself (MLX holds its interpreter); the kernel
reads both links from outside.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mxnb.kernel.ringwait import Links, likely_cause, links, ring_waits

STUCK_RANK = 'import mlx.core as mx\nmx.distributed.init(strict=True, backend="ring")\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def impostor() -> Iterator[socket.socket]:
    """A listening socket that answers connects and accepts nothing."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s
    s.close()


def _listening(pid: int, port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tcp = psutil.Process(pid).net_connections(kind="tcp")
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in tcp):
            return
        time.sleep(0.05)
    raise AssertionError(f"the rank did not listen on {port} within {within} s")


def test_a_rank_answered_by_another_program_is_seen_waiting(
    tmp_path: Path, impostor: socket.socket
) -> None:
    p0, p1 = impostor.getsockname()[1], _free_port()
    hostfile = tmp_path / "mlx-ring-hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p0}"], [f"127.0.0.1:{p1}"]]))
    env = {
        **os.environ,
        "MLX_HOSTFILE": str(hostfile),
        "MLX_RANK": "1",
        "OMPI_COMM_WORLD_RANK": "1",
    }
    proc = subprocess.Popen([sys.executable, "-c", STUCK_RANK], env=env)
    try:
        _listening(proc.pid, p1)
        said = ring_waits([os.getpid(), proc.pid])  # the test itself is no ring rank
    finally:
        proc.kill()
        proc.wait(10)
    assert {r: w.text for r, w in said.items()} == {
        1: f"connected to rank 0 at 127.0.0.1:{p0}; waits for rank 0 to connect at 127.0.0.1:{p1}"
    }
    assert likely_cause(said) is None  # rank 0 is no rank here: nothing says it waits


@pytest.mark.parametrize("listening", [False, True])
def test_links_before_any_connection(listening: bool) -> None:
    mine = socket.socket()
    mine.bind(("127.0.0.1", 0))
    if listening:
        mine.listen(1)
    p0, p1 = mine.getsockname()[1], _free_port()
    try:
        tcp = psutil.Process().net_connections(kind="tcp")
        state = links(0, [[f"127.0.0.1:{p0}"], [f"127.0.0.1:{p1}"]], tcp)
    finally:
        mine.close()
    into = (
        f"waits for rank 1 to connect at 127.0.0.1:{p0}"
        if listening
        else f"does not listen at 127.0.0.1:{p0} for rank 1"
    )
    assert not state.up
    assert state.text == f"not connected to rank 1 at 127.0.0.1:{p1}; {into}"


def test_a_formed_ring_is_not_reported(impostor: socket.socket) -> None:
    """Both links up (here: the test's own pair of sockets) is a ring that formed."""
    p0 = impostor.getsockname()[1]
    out = socket.create_connection(("127.0.0.1", p0))
    back, _ = impostor.accept()
    try:
        tcp = psutil.Process().net_connections(kind="tcp")
        # one process as both ranks of a 1-link ring: rank 0's right is rank 0
        state = links(0, [[f"127.0.0.1:{p0}"]], tcp)
    finally:
        out.close()
        back.close()
    assert state.up, state.text


def test_a_connection_its_neighbour_never_got_is_named_as_the_likely_cause() -> None:
    """The two ranks' links as the real stuck ring of a 2-rank start showed them."""
    a, b = "127.0.0.1:26961", "127.0.0.1:46125"
    waits = {
        0: Links(0, 1, a, False, False, f"not connected to rank 1 at {a}; waits ..."),
        1: Links(1, 0, b, True, False, f"connected to rank 0 at {b}; waits ..."),
    }
    assert likely_cause(waits) == (
        f"rank 1 connected to {b}, rank 0's address, but rank 0 never got the connection: "
        "another program answers there. Start the ranks again (%mxdist restart): mxnb "
        "picks new ports."
    )
    waits[0] = waits[0]._replace(from_left=True)  # rank 0 did get it: no such cause
    assert likely_cause(waits) is None
