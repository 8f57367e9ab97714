"""Where ranks will run, worked out before anything starts (no processes: pure units)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxnb.errors import ClusterError
from mxnb.kernel.placement import plan, read_hostfile
from mxnb.protocol.net import LOOPBACK, address_towards, subnet_of


def _hostfile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hosts"
    path.write_text(text)
    return str(path)


def test_a_hostfile_is_read_as_open_mpi_reads_it(tmp_path: Path) -> None:
    path = _hostfile(
        tmp_path, "# lab\nnode1 slots=4\n\nnode2   # two cores\nnode3 slots=2 max_slots=8\n"
    )
    assert read_hostfile(path) == [("node1", 4), ("node2", 1), ("node3", 2)]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "lists no hosts; write one host per line"),
        ("# only a comment\n", "lists no hosts"),
        ("node1 slots=zero\n", "line 1: slots must be a positive number, got 'slots=zero'"),
        ("node1 slots=0\n", "line 1: slots must be a positive number"),
    ],
)
def test_a_bad_hostfile_says_what_is_wrong(tmp_path: Path, text: str, said: str) -> None:
    with pytest.raises(ClusterError, match=said):
        read_hostfile(_hostfile(tmp_path, text))


def test_a_missing_hostfile_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"cannot read the hostfile .*/nope"):
        read_hostfile(str(tmp_path / "nope"))


def test_hosts_that_are_this_machine_keep_everything_on_the_loopback(tmp_path: Path) -> None:
    where = plan(3, _hostfile(tmp_path, "localhost slots=2\n127.0.0.1 slots=2\n"))
    assert where.ip == LOOPBACK and not where.spans_hosts
    assert where.slots == 4 and where.source.startswith("hostfile ")


def test_more_ranks_than_slots_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ClusterError, match=r"5 ranks do not fit the 4 slots of hostfile .*use -n 4"
    ):
        plan(5, _hostfile(tmp_path, "localhost slots=4\n"))


def test_a_host_without_an_address_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"host no-such-host\.invalid .*has no address"):
        plan(1, _hostfile(tmp_path, "no-such-host.invalid\n"))


def test_an_ip_that_is_not_this_machine_s_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"--ip 192\.0\.2\.254 is not an address of this host"):
        plan(1, _hostfile(tmp_path, "localhost\n"), ip="192.0.2.254")


def test_this_host_alone_without_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    where = plan(64)
    assert where.source == "this host" and where.ip == LOOPBACK and where.slots is None


@pytest.mark.parametrize(
    ("env", "slots"),
    [
        ({"SLURM_NTASKS": "6"}, 6),
        ({"SLURM_JOB_CPUS_PER_NODE": "4(x2),2"}, 10),
        ({"SLURM_JOB_CPUS_PER_NODE": "8"}, 8),
    ],
)
def test_a_slurm_allocation_s_size_is_read(monkeypatch: pytest.MonkeyPatch, env, slots) -> None:
    for name in ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_JOB_CPUS_PER_NODE", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "localhost")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert plan(slots).slots == slots
    with pytest.raises(ClusterError, match=f"do not fit Slurm job 77, which has {slots} tasks"):
        plan(slots + 1)


def test_the_route_and_its_subnet() -> None:
    assert address_towards("127.0.0.1") == LOOPBACK
    assert subnet_of(LOOPBACK) == "127.0.0.0/8"
