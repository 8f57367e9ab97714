"""Ranks started in the background are joined, not duplicated, by the first cell."""

from __future__ import annotations

from typing import Any

import pytest

from mxnb.kernel.background import prestart_size
from mxnb.kernel.session import MxdistSession
from procs import wait_gone


def test_prestart_size_reads_the_environment():
    assert prestart_size({}) is None
    assert prestart_size({"MXNB_PRESTART": "0"}) is None
    assert prestart_size({"MXNB_PRESTART": " off "}) is None
    assert prestart_size({"MXNB_PRESTART": "4"}) == 4
    with pytest.raises(ValueError, match="expected a number of ranks"):
        prestart_size({"MXNB_PRESTART": "four"})
    with pytest.raises(ValueError, match="positive"):
        prestart_size({"MXNB_PRESTART": "-2"})


@pytest.mark.cluster
def test_first_use_joins_the_background_start(ip: Any, capsys: pytest.CaptureFixture[str]):
    m = MxdistSession()  # a second session: the shell's cluster is untouched
    m.prestart(2)
    bg = m._background
    assert bg is not None
    cluster = m.ensure_cluster(2)
    assert cluster is bg.cluster and cluster.running
    out = capsys.readouterr().out
    assert "starting 2 MPI ranks" not in out  # no second start
    cluster.view.execute("x = size", block=True)
    assert cluster.view.pull("x", block=True) == [2, 2]
    profile = cluster.profile_dir
    m.stop()
    assert wait_gone(profile, 10) == []


@pytest.mark.cluster
def test_a_failed_background_start_is_reported_and_the_cell_starts_afresh(
    ip: Any, capsys: pytest.CaptureFixture[str]
):
    m = MxdistSession()
    m.prestart(0)  # cannot start: n must be at least 1
    cluster = m.ensure_cluster(2)
    out = capsys.readouterr().out
    assert "the background start of 0 ranks failed: n must be at least 1" in out
    assert "starting 2 MPI ranks" in out and cluster.running
    profile = cluster.profile_dir
    m.stop()
    assert wait_gone(profile, 10) == []
