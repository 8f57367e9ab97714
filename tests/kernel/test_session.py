"""Settings are traitlets on the session: %config and the line magic set the same thing."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets import TraitError

from mxnb.kernel.session import MxdistSession


def test_defaults_are_documented_in_one_place():
    s = MxdistSession()
    assert (s.ranks, s.timeout, s.checked, s.stall_grace) == (4, None, True, 2.0)
    for name in ("ranks", "timeout", "checked", "stall_grace"):
        trait = s.traits()[name]
        assert trait.metadata.get("config") is True and trait.help, name


def test_config_and_line_magic_change_the_same_setting(ip: Any, magics: Any, capsys):
    try:
        ip.run_line_magic("config", "MxdistSession.timeout = 30")
        assert magics.timeout == 30
        ip.run_line_magic("mxdist", "--timeout none")
        assert magics.timeout is None
        assert "timeout none" in capsys.readouterr().out
        ip.run_line_magic("config", "MxdistSession.checked = False")
        assert magics.checked is False
        ip.run_line_magic("mxdist", "--check")
        assert magics.checked is True
        ip.run_line_magic("config", "MxdistSession")
        listed = capsys.readouterr().out
        assert "MxdistSession.stall_grace" in listed and "MxdistSession.ranks" in listed
    finally:
        magics.timeout, magics.checked = None, True


def test_a_bad_setting_is_refused():
    with pytest.raises(TraitError):
        MxdistSession(ranks="four")


@pytest.mark.cluster
def test_a_start_that_fails_leaves_the_size_asked_for(capsys):
    """A real mpiexec refusing its arguments: the next cell tries 2 ranks again, not the default."""
    from mxnb.errors import ClusterError

    s = MxdistSession(mpi_args=["--no-such-mpiexec-option"])
    try:
        with pytest.raises(ClusterError, match="mpiexec exited before all 2 ranks started"):
            s.ensure_cluster(2)
        assert s.cell_size(None) == 2 and s.ranks == 4
        assert s.cluster is not None and s.cluster.pids() == []
        with pytest.raises(ClusterError, match="mpiexec exited before all 2 ranks started"):
            s.restart(None)  # what the ring's start error tells the user to do
    finally:
        s.stop()
    assert "mxdist: starting 2 MPI ranks ..." in capsys.readouterr().out


LOOP = "for _ in range({n}):\n    mx.eval(mx.distributed.all_sum(mx.ones({size})))\n"
NOTE = "small mx.distributed ops"


@pytest.mark.cluster
def test_a_loop_of_small_ops_says_once_what_mxnb_adds_to_its_time(run, nranks, magics, capsys):
    told = magics._cost_told
    magics._cost_told = False
    try:
        run(LOOP.format(n=1200, size=4), "--bare")  # plain MLX: nothing added
        run(LOOP.format(n=10, size=4))  # too few ops to time
        run(LOOP.format(n=1000, size=2**18))  # 1 MiB each: mxnb's share is small
        assert NOTE not in capsys.readouterr().out
        run(LOOP.format(n=1200, size=4))
        out = capsys.readouterr().out
        assert out.count(NOTE) == 1 and "1,200" in out and "checked and recorded" in out
        assert "by mxnb's op path in C" in out  # the loop took it (scripts/setup builds it)
        run(LOOP.format(n=1200, size=4), "--no-check")
        assert NOTE not in capsys.readouterr().out  # once per session
    finally:
        magics._cost_told = told
