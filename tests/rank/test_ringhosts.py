"""MLX's ring hostfile written by the ranks (ranks on several hosts).

The real exchange runs over MPI between namespace hosts
(tests/kernel/test_hosts.py, test_slurm.py); here, what each rank writes,
with a stand-in for the job's communicator that hands back given lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mxnb.rank import ringhosts


class _Job:
    """A communicator whose all-gathers return, in turn, what the other ranks said."""

    def __init__(self, *others: list[str]) -> None:
        self.others = list(others)
        self.said: list[str] = []

    def allgather(self, mine: str) -> list[str]:
        self.said.append(mine)
        return [mine, *self.others.pop(0)]


def test_each_rank_s_address_in_rank_order_in_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMPI_FILE_LOCATION", str(tmp_path / "session"))
    monkeypatch.delenv("MXNB_KERNEL_IP", raising=False)
    job = _Job(["10.0.0.3:21000"])
    path = ringhosts.write_hostfile(job)
    assert json.loads(Path(path).read_text()) == [[job.said[0]], ["10.0.0.3:21000"]]
    assert job.said[0].startswith("127.0.0.1:")
    assert Path(path).parent.parent == tmp_path / "session"
    assert os.stat(Path(path).parent).st_mode & 0o077 == 0  # owner-only
    ringhosts.remove(path)
    assert not Path(path).parent.exists()


def test_ranks_that_drew_the_same_port_draw_again_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMPI_FILE_LOCATION", str(tmp_path))
    taken = iter([21000, 21000, 22000])
    monkeypatch.setattr(ringhosts, "free_ports", lambda n, host: [next(taken)])
    job = _Job(*[["127.0.0.1:21000"]] * 3)  # the peer keeps 21000
    path = ringhosts.write_hostfile(job)
    assert job.said == ["127.0.0.1:21000", "127.0.0.1:21000", "127.0.0.1:22000"]
    assert json.loads(Path(path).read_text()) == [["127.0.0.1:22000"], ["127.0.0.1:21000"]]
