"""The ipyparallel Cluster a start builds: launchers as classes, no profile read, and the
environment its processes start with."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest

import mxnb
from mxnb.kernel import openmpi
from mxnb.kernel.launch import BLAS_SPIN, LaunchPlan, ipp_cluster
from mxnb.kernel.placement import plan


def test_building_the_cluster_scans_no_entry_points_and_reads_no_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # both happen before any process starts, so they are a cold start's time
    # (ipyparallel looks launcher names up among every package's entry points,
    # and imports its ipcluster app to read a profile's config)
    import ipyparallel.traitlets as ipp_traits
    from ipyparallel.cluster.launcher import LocalControllerLauncher, MPIEngineSetLauncher

    scans: list[Any] = []
    real = ipp_traits.entry_points
    monkeypatch.setattr(ipp_traits, "entry_points", lambda **kw: scans.append(kw) or real(**kw))
    with tempfile.TemporaryDirectory() as profile:
        cluster = ipp_cluster(LaunchPlan(
            n=2, backend="mpi", placement=plan(2), mpi=openmpi.find_openmpi(),
            profile_dir=profile, start_timeout=30.0,
        ))  # fmt: skip
        assert cluster.controller_launcher_class is LocalControllerLauncher
        assert cluster.engine_launcher_class is MPIEngineSetLauncher
        assert cluster.config.MPIEngineSetLauncher.engine_cmd[-2:] == ["-m", "mxnb.rank"]
        # ipyparallel's controller, imported as mxnb.protocol.ippimport does
        assert cluster.config.LocalControllerLauncher.controller_cmd[-2:] == [
            "-m", "mxnb.controller"
        ]  # fmt: skip
        assert "profile_config" not in cluster._trait_values
    assert scans == []


def test_openblas_spin_is_cut_short_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    where = plan(2)
    mpi = openmpi.find_openmpi()
    for name in ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    env = LaunchPlan(2, "mpi", where, mpi, "/nonexistent", 30.0).environment()
    assert env["OPENBLAS_THREAD_TIMEOUT"] == BLAS_SPIN
    with tempfile.TemporaryDirectory() as profile:
        cluster = ipp_cluster(LaunchPlan(2, "mpi", where, mpi, profile, 30.0))
        assert cluster.config.LocalControllerLauncher.environment == {
            "OPENBLAS_THREAD_TIMEOUT": BLAS_SPIN
        }
    for name in ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT"):
        monkeypatch.setenv(name, "20")
        assert (
            "OPENBLAS_THREAD_TIMEOUT"
            not in LaunchPlan(2, "mpi", where, mpi, "/nonexistent", 30.0).environment()
        )
        monkeypatch.delenv(name)


@pytest.mark.cluster
def test_a_rank_idle_after_numpy_blas_spends_no_cpu_spinning(run, nranks) -> None:
    # OpenBLAS's workers spin ~0.1 s after each call by default: at NumPy's
    # import, as every rank starts, and after a BLAS call in a cell
    run(
        "import time as _t, numpy as _np\n"
        "_a = _np.ones((256, 256))\n"
        "_a @ _a\n"
        "_c = _t.process_time()\n"
        "_t.sleep(0.3)\n"
        "idle_cpu = _t.process_time() - _c\n"
    )
    spent = mxnb.pull("idle_cpu")
    assert max(spent) < 0.03, spent


def _numpy_loaded(pid: int) -> bool:
    """Whether NumPy's compiled core is mapped into process ``pid``."""
    import psutil

    return any("_multiarray_umath" in m.path for m in psutil.Process(pid).memory_maps())


@pytest.mark.cluster
def test_the_controller_and_ranks_import_numpy_only_when_a_cell_uses_it() -> None:
    from mxnb.kernel.cluster import MxCluster

    with MxCluster(n=2) as c:
        ranks = c.rank_pids([0, 1])
        controller = c._ipp.controller.pid
        # a cell that returns a value: ipyparallel's serializer has run both ways
        c.view.execute("total = mx.distributed.all_sum(mx.ones(3)).tolist()", block=True)
        assert c.view.pull("total", block=True) == [[2.0] * 3] * 2
        assert [_numpy_loaded(pid) for pid in (controller, *ranks)] == [False] * 3
        # once a cell imports it, NumPy's converters are MLX entry points (an
        # evaluation mxnb sees) and arrays travel as ipyparallel sends them
        c.view.execute(
            "import numpy as np\n"
            "seen = hasattr(np.asarray, '__mxnb_original__')\n"
            "a = np.asarray(mx.distributed.all_sum(mx.arange(100_000)))\n",
            block=True,
        )
        assert c.view.pull("seen", block=True) == [True, True]
        got = c.view.pull("a", block=True)
        assert [int(g.sum()) for g in got] == [2 * sum(range(100_000))] * 2
        assert [_numpy_loaded(pid) for pid in ranks] == [True, True]
