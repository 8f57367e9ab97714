"""Ranks on several hosts: real network-namespace hosts reached through Open MPI's ssh launcher.

Two hosts (own address, hostname and ``/tmp``) hold two ranks each; the
kernel (this process) is a third machine, as a login node is.  Processes are
counted per host, by network namespace, so a rank left behind on either
host fails the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hosts import Hosts, namespace_hosts, unavailable

import mxnb
from collective_cases import EXPECTED, SETUP, inputs
from mxnb.errors import ClusterError, RankError
from mxnb.kernel.cluster import MxCluster
from mxnb.views.outcome import strip_ansi
from procs import jupyter_kernel

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "namespaces"),
]


@pytest.fixture(scope="module")
def hosts(ip: Any, magics: Any) -> Iterator[Hosts]:
    """Two namespace hosts; the shell's cluster as it was is back after this module."""
    was = magics.running_n
    with namespace_hosts(2) as built:
        old = {k: os.environ.get(k) for k in built.env()}
        os.environ.update(built.env())
        try:
            yield built
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if was:  # later tests share the session's cluster (conftest.nranks)
        ip.run_line_magic("mxdist", f"-n {was}")


@pytest.fixture(scope="module")
def spread(ip: Any, magics: Any, hosts: Hosts) -> Iterator[str]:
    """4 ranks behind the shell's magic, 2 on each host; this host again after."""
    hostfile = hosts.hostfile(2)
    ip.run_line_magic("mxdist", f"-n 4 --hostfile {hostfile}")
    assert magics.cluster is not None and magics.cluster.hostfile == hostfile
    yield hostfile
    ip.run_line_magic("mxdist", "stop")
    magics.hostfile = ""
    assert hosts.wait_empty() == {}


def cell(ip: Any, code: str, line: str = "") -> Any:
    return ip.run_cell_magic("mxdist", line, code)


def failure(ip: Any, code: str, line: str = "") -> str:
    with pytest.raises(RankError) as info:
        cell(ip, code, line)
    return strip_ansi("\n".join(info.value._render_traceback_()))


def test_status_lists_each_rank_s_host(ip: Any, magics: Any, spread: str, capsys) -> None:
    ip.run_line_magic("mxdist", "status")
    out = capsys.readouterr().out
    assert "hosts: node1 (ranks 0, 1), node2 (ranks 2, 3)" in out
    assert f"placed by: hostfile {spread}" in out


def test_each_rank_runs_on_its_host_and_prints_labelled(ip: Any, spread: str, capsys) -> None:
    cell(ip, "import socket\nprint('on', socket.gethostname())")
    out = capsys.readouterr().out
    for r, host in enumerate(["node1", "node1", "node2", "node2"]):
        assert f"[rank {r}] on {host}" in out


def test_listening_sockets_use_the_bridge_only(spread: str, hosts: Hosts, magics: Any) -> None:
    """Controller and probes listen on the address that reaches the hosts, not on all."""
    c = magics.cluster
    probes = [r["probe"].rpartition(":")[0] for r in c._ranks]
    a, b = (h.ip for h in hosts.hosts)
    assert probes == [a, a, b, b]
    assert c._placement.ip == hosts.gateway
    ctl = c._ipp.controller.pid
    import psutil

    bound = {conn.laddr.ip for conn in psutil.Process(ctl).net_connections("inet")
             if conn.status == psutil.CONN_LISTEN}  # fmt: skip
    assert bound == {hosts.gateway}, bound


def test_mpi_uses_tcp_between_hosts_on_their_subnet_only(ip: Any, spread: str, hosts: Hosts):
    cell(ip, "import os\nbtl = os.environ.get('OMPI_MCA_btl')\n"
             "nets = os.environ.get('OMPI_MCA_btl_tcp_if_include')")  # fmt: skip
    assert mxnb.pull("btl") == ["self,sm,tcp"] * 4
    assert mxnb.pull("nets") == [hosts.gateway.rpartition(".")[0] + ".0/24"] * 4


def test_the_user_s_own_open_mpi_settings_win(
    ip: Any, magics: Any, spread: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """An OMPI_MCA_* variable of the user's, and --mpi-args, reach ranks on every host."""
    monkeypatch.setenv("OMPI_MCA_btl", "self,tcp")
    try:
        cell(ip, "import os\nbtl = os.environ.get('OMPI_MCA_btl')\n"
                 "links = os.environ.get('OMPI_MCA_btl_tcp_links')\n"
                 "y = mx.distributed.all_sum(mx.ones(2)).tolist()",
             "--mpi-args '--mca btl_tcp_links 2'")  # fmt: skip
        assert "restarting with 4 ranks and the new --ip/--mpi-args" in capsys.readouterr().out
        assert mxnb.pull("btl") == ["self,tcp"] * 4
        assert mxnb.pull("links") == ["2"] * 4
        assert mxnb.pull("y") == [[4.0, 4.0]] * 4
    finally:
        monkeypatch.delenv("OMPI_MCA_btl")
        ip.run_line_magic("mxdist", "--mpi-args ''")
        assert magics.mpi_args == [] and magics.cluster.mpi_args == []


@pytest.mark.parametrize(("op", "expect"), EXPECTED)
def test_collectives_across_hosts_give_numpy_s_answers(ip: Any, spread: str, op: str, expect):
    cell(ip, f"{SETUP}y = mx.distributed.{op}(x)\nmx.eval(y)")
    want = expect(inputs(4))
    for r, y in enumerate(mxnb.pull("y")):
        np.testing.assert_allclose(y, want, err_msg=f"rank {r}")


def test_messages_cross_hosts(ip: Any, spread: str) -> None:
    cell(
        ip,
        "x = mx.arange(3, dtype=mx.float32) + 10 * rank\n"
        "if rank == 1:\n    mx.eval(mx.distributed.send(x, 2))\n"
        "elif rank == 2:\n    got = mx.distributed.recv_like(x, 1)\n    mx.eval(got)\n",
    )
    np.testing.assert_allclose(mxnb.pull("got", targets=[2])[0], [10, 11, 12])


def test_a_checked_mismatch_names_ranks_on_both_hosts(ip: Any, spread: str) -> None:
    text = failure(ip, "y = mx.distributed.all_sum(mx.ones(2 if rank < 3 else 3))\nmx.eval(y)")
    assert "rank 3" in text and "float32[3]" in text and "float32[2]" in text


def test_a_checked_hang_is_diagnosed_and_the_ranks_kept(ip: Any, magics: Any, spread: str):
    """The probes on both hosts answer; the waiting ranks are interrupted through them."""
    from IPython.utils.capture import capture_output

    profile = magics.cluster.profile_dir
    t0 = time.monotonic()
    with capture_output() as cap:
        text = failure(ip, "x = 7\nif rank != 3:\n    print(mx.distributed.all_sum(mx.ones(2)))")
    assert time.monotonic() - t0 < 15
    # the who-waits-for-whom picture says where each rank runs, as the report does
    (picture,) = [o.data for o in cap.outputs if "image/png" in o.data]
    assert "rank 3 on node2: finished the cell" in picture["text/plain"]
    assert "rank 0 on node1: waits on rank 3 in all_sum #1" in picture["text/plain"]
    assert "Likely cause: rank 3 finished the cell without calling all_sum" in text
    assert "rank 3 on node2: finished the cell" in text  # each rank's line says where
    assert "rank 0 on node1: waiting for the other ranks" in text
    assert "the cluster is ready for the next cell (variables kept)" in text
    assert magics.cluster.profile_dir == profile
    assert mxnb.pull("x") == [7, 7, 7, 7]


def test_targets_run_on_one_host_only(ip: Any, spread: str, capsys) -> None:
    capsys.readouterr()
    cell(ip, "import socket\nprint(socket.gethostname())", "--targets 2-3")
    out = capsys.readouterr().out
    assert "[rank 2] node2" in out and "[rank 3] node2" in out and "rank 0" not in out


def test_the_trace_and_its_view_cover_every_host(ip: Any, spread: str) -> None:
    cell(ip, "x = mx.ones(2) * rank\ny = mx.distributed.all_sum(x)\nmx.eval(y)", "--viz")
    t = mxnb.last_trace()
    (step,) = t.steps
    assert step.op == "all_sum"
    assert step.members == [0, 1, 2, 3] and step.mismatch == []
    for r in range(4):
        np.testing.assert_allclose(t.value(1, r, "before"), [r, r])
        np.testing.assert_allclose(t.value(1, r, "after"), [6, 6])
    assert t.text().startswith(
        "mxnb trace: 1 op on ranks 0-3, on 2 hosts: node1 (ranks 0, 1), node2 (ranks 2, 3)"
    )


def test_a_hang_inside_mpi_stops_the_job_on_both_hosts(
    ip: Any, magics: Any, spread: str, hosts: Hosts, capsys
) -> None:
    """Unchecked, the ranks block inside MPI: the job goes, on every host, and comes back."""
    profile = magics.cluster.profile_dir
    code = "if rank == 1:\n    raise ValueError('boom')\nprint(mx.distributed.all_sum(mx.ones(3)))"
    text = failure(ip, code, "--no-check")
    assert "--- rank 1 raised ValueError ---" in text
    assert "the MPI job was stopped" in text
    assert magics.cluster is None
    assert hosts.wait_empty() == {}
    capsys.readouterr()
    cell(ip, "import socket\nprint('fresh', socket.gethostname())")
    out = capsys.readouterr().out
    assert "the previous ranks were stopped" in out
    assert "[rank 3] fresh node2" in out and magics.cluster.profile_dir != profile


def test_a_rank_dying_on_another_host_is_named(
    ip: Any, magics: Any, spread: str, hosts: Hosts
) -> None:
    """No pid of ours reaches it: Open MPI ends the job, and mpiexec says which rank died."""
    t0 = time.monotonic()
    text = failure(ip, "import os, signal, time\nif rank == 3:\n    os.kill(os.getpid(), "
                       "signal.SIGKILL)\ntime.sleep(30)")  # fmt: skip
    assert time.monotonic() - t0 < 20
    assert "rank 3 was killed by signal 9" in text, text
    assert magics.cluster is None
    assert hosts.wait_empty() == {}


def test_a_rank_ending_on_another_host_between_cells_is_named_and_fresh_ranks_start(
    ip: Any, magics: Any, spread: str, hosts: Hosts, capsys
) -> None:
    """Rank 3, on the second host, dies after its cell returned: the next cell says
    how, then runs on fresh ranks on both hosts, and nothing of the old job is left
    on either."""
    cell(ip, "pass", f"-n 4 --hostfile {spread}")  # after the crash above: fresh ranks
    before = hosts.processes()
    cell(ip, "import os, signal, threading\nif rank == 3:\n    "
             "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGKILL)).start()")  # fmt: skip
    cluster, deadline = magics.cluster, time.monotonic() + 20
    while not cluster.job_ended():
        assert time.monotonic() < deadline, "the job outlived its rank 3 by 20 s"
        time.sleep(0.1)
    capsys.readouterr()
    cell(ip, "import socket\nhost = socket.gethostname()")
    out = strip_ansi(capsys.readouterr().out)
    assert (
        "mxdist: since the last cell, rank 3 was killed by signal 9 (Killed); the MPI job "
        "ended. Fresh ranks start now; variables on the ranks are lost." in out
    ), out
    assert mxnb.pull("host") == ["node1", "node1", "node2", "node2"]
    after = hosts.processes()
    assert all(set(before[h]).isdisjoint(after[h]) for h in before), (before, after)
    assert all(len(p) >= 2 for p in after.values()), after  # a daemon and 2 ranks each


RING_LINKS = (
    "import psutil\n"
    "from mxnb.protocol.net import RING_PORTS, ephemeral_low\n"
    "_ring = range(RING_PORTS[0], ephemeral_low())\n"
    "links = sorted({(c.laddr.ip, c.raddr.ip) for c in psutil.Process().net_connections('tcp')\n"
    "                if c.raddr and (c.raddr.port in _ring or c.laddr.port in _ring)})\n"
)


def test_mlx_s_ring_spans_the_hosts(ip: Any, magics: Any, spread: str, hosts: Hosts) -> None:
    """Each rank listens for the ring on its own host's address, told to the others
    over MPI; MLX's hostfile is gone once MLX has read it."""
    a, b = (h.ip for h in hosts.hosts)
    try:
        cell(ip, "import os\n"
                 "y = mx.distributed.all_sum(mx.ones(3) * (rank + 1)).tolist()\n"
                 "g = mx.distributed.all_gather(mx.array([rank])).tolist()\n"
                 "kept = os.path.exists(os.environ['MLX_HOSTFILE'])\n" + RING_LINKS,
             "--backend ring")  # fmt: skip
        assert magics.cluster.backend == "ring"
        assert mxnb.pull("y") == [[10.0] * 3] * 4
        assert mxnb.pull("g") == [[0, 1, 2, 3]] * 4
        assert mxnb.pull("kept") == [False] * 4
        links = mxnb.pull("links")
        assert (a, b) in links[1] and (b, a) in links[3]  # 1 -> 2 and 3 -> 0 cross hosts
        assert all(ip in (a, b) for rank in links for pair in rank for ip in pair), links
        # checked mode and its errors work over MPI beside the ring
        said = failure(ip, "mx.eval(mx.distributed.all_sum(mx.ones(3 if rank == 2 else 2)))")
        assert "rank 2" in said and "shape" in said
    finally:
        ip.run_line_magic("mxdist", "--backend mpi")
    assert magics.cluster.backend == "mpi"


def test_restart_and_stop_leave_nothing_on_any_host(
    ip: Any, magics: Any, spread: str, hosts: Hosts, capsys
) -> None:
    before = hosts.processes()
    ip.run_line_magic("mxdist", "restart")
    after = hosts.processes()
    assert all(set(before[h]).isdisjoint(after[h]) for h in before)
    assert all(len(p) >= 2 for p in after.values()), after  # a daemon and 2 ranks each
    ip.run_line_magic("mxdist", "stop")
    assert hosts.wait_empty() == {}
    cell(ip, "import socket\nhost = socket.gethostname()")  # the hostfile is kept
    assert mxnb.pull("host") == ["node1", "node1", "node2", "node2"]
    # a cell's own --hostfile: here 2 ranks, both on the first host
    one = hosts.hostfile(2, names=[hosts.hosts[0].ip])
    cell(ip, "import socket\nhost = socket.gethostname()", f"-n 2 --hostfile {one}")
    assert mxnb.pull("host") == ["node1", "node1"]
    deadline = time.monotonic() + 10
    while hosts.processes()["node2"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hosts.processes()["node2"] == []
    cell(ip, "import socket\nhost = socket.gethostname()", f"-n 4 --hostfile {spread}")


# -- starts that cannot succeed: a clear error within 30 s, nothing left --------


@pytest.fixture
def idle(ip: Any, hosts: Hosts) -> None:
    """Nothing running on the hosts: the magic's ranks stopped."""
    ip.run_line_magic("mxdist", "stop")
    assert hosts.wait_empty() == {}


def _fails(hosts: Hosts, hostfile: str, **kw: Any) -> str:
    t0 = time.monotonic()
    c = MxCluster(n=4, hostfile=hostfile, start_timeout=60, **kw)
    with pytest.raises(ClusterError) as info:
        c.start()
    assert time.monotonic() - t0 < 30
    assert not c.running and c.profile_dir is None
    assert hosts.wait_empty() == {}
    return str(info.value)


def test_an_unreachable_host_is_named(hosts: Hosts, idle: None) -> None:
    gone = hosts.gateway.rpartition(".")[0] + ".99"  # on the bridge's subnet, no host
    said = _fails(hosts, hosts.hostfile(2, names=[hosts.hosts[0].ip, gone]))
    assert said.startswith(f"host {gone} could not be reached"), said


def test_a_host_without_this_environment_is_named(hosts: Hosts, idle: None) -> None:
    with namespace_hosts(2, hidden={1: [sys.prefix]}) as other:
        os.environ.update(other.env())
        try:
            said = _fails(other, other.hostfile(2))
            assert said.startswith(f"host {other.hosts[1].ip} has no {sys.prefix}"), said
        finally:
            os.environ.update(hosts.env())
    assert "same path on every host" in said


def test_a_controller_address_the_hosts_cannot_reach_is_named(hosts: Hosts, idle: None) -> None:
    """--ip on an address of this host that no route from the hosts leads to."""
    # an address on a bridge of its own, which no host is attached to
    subprocess.run(["ip", "link", "add", "mxnbdummy0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.78.0.1/24", "dev", "mxnbdummy0"], check=True)
        subprocess.run(["ip", "link", "set", "mxnbdummy0", "up"], check=True)
        said = _fails(hosts, hosts.hostfile(2), ip="10.78.0.1")
    finally:
        subprocess.run(["ip", "link", "del", "mxnbdummy0"], check=False)
    assert "cannot reach the kernel's controller at 10.78.0.1" in said, said
    assert "on host node" in said and "--ip" in said


def test_more_ranks_than_slots_is_refused_before_anything_starts(hosts: Hosts) -> None:
    c = MxCluster(n=5, hostfile=hosts.hostfile(2))
    with pytest.raises(ClusterError, match="5 ranks do not fit the 4 slots of hostfile"):
        c.start()


# -- the owner goes away: nothing is left on any host ------------------------------

START = (
    "import sys\n"
    "from mxnb.kernel.cluster import MxCluster\n"
    "c = MxCluster(n=4, hostfile=sys.argv[1]).start()\n"
    "print(c.profile_dir, flush=True)\n"
    "import time\ntime.sleep(600)\n"
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_kernel_leaves_nothing_on_any_host(hosts: Hosts, idle: None, sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", START, hosts.hostfile(2)],
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("/")
    assert all(len(p) >= 3 for p in hosts.processes().values())
    os.kill(proc.pid, sig)
    proc.wait(timeout=10)
    assert hosts.wait_empty() == {}


def test_a_kernel_shut_down_leaves_nothing_on_any_host(hosts: Hosts, idle: None) -> None:
    """A real Jupyter kernel, its ranks on both hosts, shut down as Jupyter does it."""
    with jupyter_kernel("python3") as (_, kc):
        quiet = {"timeout": 120, "output_hook": lambda m: None}
        kc.execute_interactive("%load_ext mxnb", **quiet)
        reply = kc.execute_interactive(f"%mxdist -n 4 --hostfile {hosts.hostfile(2)}", **quiet)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert all(len(p) >= 3 for p in hosts.processes().values()), hosts.processes()
    assert hosts.wait_empty() == {}
