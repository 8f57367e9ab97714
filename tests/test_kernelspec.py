"""A real Jupyter kernel: the mxnb kernel spec, and no orphans however it ends."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import pytest

from procs import cluster_processes, jupyter_kernel, wait_gone

pytestmark = pytest.mark.cluster

PROFILE = "print(get_ipython().magics_manager.registry['MxdistMagics'].session.cluster.profile_dir)"


def execute(kc: Any, code: str, timeout: float = 120) -> tuple[str, list[dict[str, Any]]]:
    """Run code; return its stream text and any error contents."""
    text: list[str] = []
    errors: list[dict[str, Any]] = []

    def hook(msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind == "error":
            errors.append(content)
        elif kind in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))

    kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return "".join(text), errors


@pytest.fixture
def kernel(request: pytest.FixtureRequest):
    with jupyter_kernel(getattr(request, "param", "mxnb")) as started:
        yield started


def _start_ranks(kc: Any) -> str:
    # the default size: the ranks the kernel started in the background
    out, errors = execute(kc, "%%mxdist\nprint('hi from', rank)")
    assert not errors, errors
    assert "[rank 0] hi from 0" in out and "[rank 1] hi from 1" in out
    out, errors = execute(kc, PROFILE)
    assert not errors, errors
    profile = out.strip()
    assert profile.startswith("/")
    return profile


def test_mxnb_kernel_preloads_extension_and_errors_fail_the_cell(kernel):
    _, kc = kernel
    _start_ranks(kc)
    _, errors = execute(kc, "%%mxdist\nassert rank == 0, f'rank {rank} disagrees'")
    assert len(errors) == 1
    assert errors[0]["ename"] == "RankError"
    assert "rank 1: AssertionError: rank 1 disagrees" in errors[0]["evalue"]
    assert any("--- rank 1 raised AssertionError ---" in ln for ln in errors[0]["traceback"])


def test_kernel_shutdown_stops_cluster(kernel):
    km, kc = kernel
    profile = _start_ranks(kc)
    km.shutdown_kernel(now=False)
    assert wait_gone(profile, 15) == []


def test_kernel_restart_stops_cluster(kernel):
    km, kc = kernel
    profile = _start_ranks(kc)
    km.restart_kernel(now=False)
    assert wait_gone(profile, 15) == []
    kc.wait_for_ready(timeout=60)
    out, _ = execute(kc, "%mxdist status")
    # the fresh kernel starts fresh ranks of its own
    assert profile not in out
    assert "ranks starting in the background" in out or "4 ranks, backend mpi" in out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_kernel_leaves_no_orphans(kernel, sig):
    km, kc = kernel
    profile = _start_ranks(kc)
    pid = km.provisioner.process.pid
    os.kill(pid, sig)
    assert wait_gone(profile, 15) == []


def test_stop_button_ends_a_hung_cell_in_a_real_kernel(kernel):
    km, kc = kernel
    profile = _start_ranks(kc)
    hung = "%%mxdist --no-check\nif rank == 1:\n    print(mx.distributed.all_sum(mx.ones(2)))"
    msg_id = kc.execute(hung)
    time.sleep(2.0)
    t0 = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=15)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert time.monotonic() - t0 < 10
    assert reply["content"]["status"] == "error"
    assert "the cell was interrupted" in reply["content"]["evalue"]
    assert wait_gone(profile, 15) == []  # rank 1 was stuck in MPI: job replaced
    out, errors = execute(kc, "%%mxdist\nprint('back', rank)")
    assert not errors, errors
    assert "the previous ranks were stopped" in out
    assert "[rank 1] back 1" in out


def _ranks_of(pid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.cmdline()[1:3] == ["-m", "mxnb.rank"]:
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_mxnb_kernel_starts_ranks_before_the_first_cell(kernel):
    km, kc = kernel
    pid = km.provisioner.process.pid
    deadline = time.monotonic() + 60
    while len(_ranks_of(pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_ranks_of(pid)) == 4  # MXNB_PRESTART=4 from the kernel spec, no cell yet
    status = ""
    while "ranks starting in the background" in (status or "ranks starting in the background"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
        status, errors = execute(kc, "%mxdist status")  # answers without waiting
        assert not errors, errors
    assert "4 ranks, backend mpi" in status
    out, errors = execute(kc, "%%mxdist\nprint('size', size)")
    assert not errors, errors
    # the cell used those ranks: it neither started nor waited for any
    assert "starting" not in out and "waiting" not in out, out
    assert "[rank 3] size 4" in out


def test_shutdown_during_the_background_start_leaves_nothing():
    before = {p.pid for p in cluster_processes()}
    with jupyter_kernel("mxnb"):
        pass  # shut down on leaving: most likely while the ranks still start
    deadline = time.monotonic() + 20
    left = [p for p in cluster_processes() if p.pid not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in cluster_processes() if p.pid not in before]
    assert left == []
