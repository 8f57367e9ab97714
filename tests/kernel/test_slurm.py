"""Ranks inside a real Slurm allocation: ``salloc -N2`` over two namespace hosts.

Nothing is configured: a notebook's kernel started inside the allocation
(here a Python process under ``salloc``, running the magic in an IPython
shell) puts its ranks where Slurm says, through Open MPI's own Slurm
support.  Processes are counted per host afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hosts import Hosts, namespace_hosts
from hosts import unavailable as no_hosts
from slurm import Slurm, slurm_on
from slurm import unavailable as no_slurm

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(bool(no_hosts()), reason=no_hosts() or "namespaces"),
    pytest.mark.skipif(bool(no_slurm()), reason=no_slurm() or "slurm"),
]

#: Run in a kernel-like process inside the allocation; prints one RESULT line.
NOTEBOOK = r"""
import json, sys
from IPython.testing.globalipapp import start_ipython
import mxnb
from mxnb.errors import RankError
from mxnb.views.outcome import strip_ansi

shell = start_ipython()
shell.run_line_magic("load_ext", "mxnb")
session = shell.magics_manager.registry["MxdistMagics"].session
out = {}

def failing(code, line=""):
    try:
        shell.run_cell_magic("mxdist", line, code)
    except RankError as e:
        return strip_ansi("\n".join(e._render_traceback_()))
    return "no error"

shell.run_cell_magic("mxdist", "-n 4", "import socket\nhost = socket.gethostname()\n"
                     "y = mx.distributed.all_sum(mx.ones(2) * rank).tolist()")
out["host"], out["y"] = mxnb.pull("host"), mxnb.pull("y")
out["status"] = session.status()
out["checked_hang"] = failing("x = 5\nif rank != 3:\n    print(mx.distributed.all_sum(mx.ones(2)))")
out["kept"] = session.cluster is not None and mxnb.pull("x") == [5, 5, 5, 5]
out["blocked"] = failing(
    "if rank == 1:\n    raise ValueError('boom')\nprint(mx.distributed.all_sum(mx.ones(3)))",
    "--no-check")
out["lost"] = session.cluster is None
shell.run_cell_magic("mxdist", "", "import socket\nagain = socket.gethostname()")
out["again"] = mxnb.pull("again")
shell.run_cell_magic("mxdist", "--backend ring", "import socket\nring_host = socket.gethostname()\n"
                     "ring_y = mx.distributed.all_sum(mx.ones(2) * rank).tolist()")
out["ring_host"], out["ring_y"] = mxnb.pull("ring_host"), mxnb.pull("ring_y")
out["ring"] = session.cluster.backend
shell.run_line_magic("mxdist", "stop")
print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def slurm() -> Iterator[tuple[Hosts, Slurm]]:
    with namespace_hosts(2) as hosts, slurm_on(hosts) as s:
        yield hosts, s


def _salloc(
    s: Slurm, args: list[str], code: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **s.env()}
    env.pop("PRTE_MCA_plm_ssh_agent", None)
    return subprocess.run(
        ["salloc", *args, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _result(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise AssertionError(f"no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def test_a_notebook_in_an_allocation_runs_where_slurm_says(slurm: tuple[Hosts, Slurm]) -> None:
    hosts, s = slurm
    got = _result(_salloc(s, ["-N2", "-n4"], NOTEBOOK))
    assert got["host"] == ["node1", "node1", "node2", "node2"]
    assert got["y"] == [[6.0, 6.0]] * 4
    assert "hosts: node1 (ranks 0, 1), node2 (ranks 2, 3)" in got["status"]
    assert "placed by: Slurm job" in got["status"]
    # the hang diagnosis reaches ranks on both nodes; the ranks are kept
    assert "Likely cause: rank 3 finished the cell without calling all_sum" in got["checked_hang"]
    assert got["kept"]
    # blocked inside MPI: the job is stopped, and the next cell starts on the nodes again
    assert "the MPI job was stopped" in got["blocked"] and got["lost"]
    assert got["again"] == ["node1", "node1", "node2", "node2"]
    # MLX's ring over the same nodes: each rank tells the others its own address
    assert got["ring_host"] == ["node1", "node1", "node2", "node2"]
    assert got["ring_y"] == [[6.0, 6.0]] * 4 and got["ring"] == "ring"
    assert hosts.wait_empty(keep=s.daemons) == {}


def test_an_allocation_smaller_than_n_is_refused_with_what_to_do(slurm: tuple[Hosts, Slurm]):
    hosts, s = slurm
    code = (
        "from mxnb.kernel.cluster import MxCluster\n"
        "try:\n    MxCluster(n=4).start()\nexcept RuntimeError as e:\n    print('RESULT', e)\n"
    )
    t0 = time.monotonic()
    done = _salloc(s, ["-N2", "-n2"], code)
    assert time.monotonic() - t0 < 30
    said = done.stdout.partition("RESULT ")[2]
    assert said.startswith("4 ranks do not fit Slurm job "), done.stdout + done.stderr
    assert "which has 2 tasks; use -n 2 or ask Slurm for more (salloc -n N)" in said
    assert hosts.wait_empty(keep=s.daemons) == {}


KILLED = (
    "import os, signal\n"
    "from mxnb.kernel.cluster import MxCluster\n"
    "c = MxCluster(n=4).start()\n"
    "print('RESULT', c.status().hosts, flush=True)\n"
    "os.kill(os.getpid(), signal.SIGKILL)\n"
)


def test_a_killed_kernel_in_an_allocation_leaves_nothing(slurm: tuple[Hosts, Slurm]) -> None:
    hosts, s = slurm
    done = _salloc(s, ["-N2", "-n4"], KILLED)
    assert "('node1', 'node1', 'node2', 'node2')" in done.stdout, done.stdout + done.stderr
    assert hosts.wait_empty(20, keep=s.daemons) == {}
