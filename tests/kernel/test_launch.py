"""The ipyparallel Cluster a start builds: launchers given as classes, no profile read."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest

from mxnb.kernel import openmpi
from mxnb.kernel.launch import LaunchPlan, ipp_cluster
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
