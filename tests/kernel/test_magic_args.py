"""Bad input to the magic: a UsageError that says what is allowed, nothing started."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from mxnb.kernel.magics import parse_targets
from procs import cluster_processes


@pytest.fixture
def fresh(ip, magics):
    """The shell with no cluster running, checked to stay that way."""
    ip.run_line_magic("mxdist", "stop")
    before = {p.pid for p in cluster_processes()}
    yield ip
    assert magics.cluster is None
    assert {p.pid for p in cluster_processes()} == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-n 0", "number of ranks >= 1, got 0"),
        ("-n -3", "number of ranks >= 1"),
        ("-n abc", "whole number of ranks >= 1, got 'abc'"),
        ("--bogus", "unrecognized arguments: --bogus"),
        ("-n 2 --targets 5", "rank 5 is out of range; ranks 0..1"),
        ("-n 2 --targets x", "expected ranks 0..1"),
        ("--timeout -1", "seconds > 0"),
        ("status", "is for the line magic"),
    ],
)
def test_cell_usage_errors(fresh, line, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("(", r"\(")):
        fresh.run_cell_magic("mxdist", line, "print(1)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown action 'frobnicate'"),
        ("-n 0", "ranks >= 1"),
        ("--targets 0", "cells only"),
        ("--viz", "cells only"),
        ("--no-trace", "cells only"),
    ],
)
def test_line_usage_errors(fresh, line, message):
    with pytest.raises(UsageError, match=message):
        fresh.run_line_magic("mxdist", line)


def test_stop_twice_and_status_without_cluster(fresh, capsys):
    fresh.run_line_magic("mxdist", "stop")
    fresh.run_line_magic("mxdist", "stop")
    fresh.run_line_magic("mxdist", "status")
    assert "no cluster running" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "size", "want"),
    [
        ("0", 4, [0]),
        ("1-3", 4, [1, 2, 3]),
        ("3,0,0", 4, [0, 3]),
        ("all", 3, [0, 1, 2]),
        (" 0 , 2 ", 3, [0, 2]),
    ],
)
def test_parse_targets(spec, size, want):
    assert parse_targets(spec, size) == want


@pytest.mark.parametrize("spec", ["4", "3-1", "-1", "a", "", "0-"])
def test_parse_targets_rejects(spec):
    with pytest.raises(UsageError, match="--targets"):
        parse_targets(spec, 4)


def test_resize_and_restart_through_the_magic(fresh, capsys):
    fresh.run_line_magic("mxdist", "-n 2")
    fresh.run_cell_magic("mxdist", "", "kept = rank")
    first = fresh.magics_manager.registry["MxdistMagics"].session.cluster.profile_dir
    capsys.readouterr()
    fresh.run_cell_magic("mxdist", "-n 3", "print(size)")
    out = capsys.readouterr().out
    assert "restarting with 3 ranks (was 2); variables on the ranks are lost" in out
    assert "[rank 2] 3" in out
    from procs import wait_gone

    assert wait_gone(first, 5) == []
    from mxnb.errors import RankError

    with pytest.raises(RankError, match="NameError"):
        fresh.run_cell_magic("mxdist", "", "kept")
    fresh.run_cell_magic("mxdist", "", "kept = 1")
    fresh.run_line_magic("mxdist", "restart")
    with pytest.raises(RankError, match="ranks 0-2: NameError"):
        fresh.run_cell_magic("mxdist", "", "kept")
    fresh.run_line_magic("mxdist", "stop")
