"""Finding Open MPI and building the launch environment (pure units + the real wheel)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from mxnb.kernel import openmpi as mpi


@pytest.fixture(autouse=True)
def _no_cache():
    mpi._launcher_identity.cache_clear()
    yield
    mpi._launcher_identity.cache_clear()


def test_finds_the_pypi_wheel_and_skips_its_linker_script():
    found = mpi.find_openmpi()
    assert found.prefix == Path(sys.prefix)
    assert found.libmpi.name == "libmpi.so.40"
    # the wheel's plain libmpi.so is the text linker script MLX cannot dlopen
    script = Path(sys.prefix, "lib", "libmpi.so")
    if script.exists():
        assert not mpi._is_loadable_library(script)
    assert "Open MPI" in found.version


def _fake_prefix(tmp_path: Path, banner: str, lib: bytes) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    exe = tmp_path / "bin" / "mpiexec"
    exe.write_text(f"#!/bin/sh\necho '{banner}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "lib" / "libmpi.so.40").write_bytes(lib)
    (tmp_path / "lib" / "libmpi.so").write_bytes(b"INPUT(libmpi.so.40)\n")
    return tmp_path


def test_explicit_prefix_wins(tmp_path, monkeypatch):
    prefix = _fake_prefix(tmp_path, "mpiexec (Open MPI) 5.0.9", b"\x7fELF" + b"\0" * 60)
    monkeypatch.setenv(mpi.PREFIX_VAR, str(prefix))
    found = mpi.find_openmpi()
    assert found.prefix == prefix
    assert found.libmpi == prefix / "lib" / "libmpi.so.40"


def test_mpich_is_refused_with_a_way_out(tmp_path, monkeypatch):
    prefix = _fake_prefix(tmp_path, "HYDRA build details:", b"\x7fELF" + b"\0" * 60)
    monkeypatch.setenv(mpi.PREFIX_VAR, str(prefix))
    monkeypatch.setattr(mpi, "_candidate_prefixes", lambda: [(prefix, "$MXNB_MPI_PREFIX")])
    with pytest.raises(mpi.MPIError) as info:
        mpi.find_openmpi()
    msg = str(info.value)
    assert "not Open MPI" in msg and "MPICH" in msg
    assert "pip install openmpi" in msg


def test_only_linker_script_is_refused(tmp_path, monkeypatch):
    prefix = _fake_prefix(tmp_path, "mpiexec (Open MPI) 5.0.9", b"INPUT(libmpi.so.41)\n")
    monkeypatch.setattr(mpi, "_candidate_prefixes", lambda: [(prefix, "test")])
    with pytest.raises(mpi.MPIError, match="no loadable libmpi"):
        mpi.find_openmpi()


def test_root_flags_only_for_root(monkeypatch):
    found = mpi.find_openmpi()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    env = mpi.launch_env(found)
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
    assert env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"
    assert env["MLX_MPI_LIBNAME"] == str(found.libmpi)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    env = mpi.launch_env(found)
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in env


def test_oversubscribe_only_beyond_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    env = {"MLX_MPI_LIBNAME": "x"}
    assert "--oversubscribe" not in mpi.mpiexec_args(2, env)
    assert "--oversubscribe" in mpi.mpiexec_args(3, env)
    args = mpi.mpiexec_args(8, env, hostfile="/tmp/hosts")
    assert "--oversubscribe" not in args
    assert args[:2] == ["--hostfile", "/tmp/hosts"]
    assert ["-x", "MLX_MPI_LIBNAME"] == args[2:4]


def test_ranks_use_shared_memory_unless_the_user_chose(monkeypatch):
    found = mpi.find_openmpi()
    monkeypatch.delenv("OMPI_MCA_btl", raising=False)
    assert mpi.launch_env(found)["OMPI_MCA_btl"] == "self,sm"
    monkeypatch.setenv("OMPI_MCA_btl", "self,tcp")
    assert "OMPI_MCA_btl" not in mpi.launch_env(found)
