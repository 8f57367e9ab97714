"""Shared fixtures: one in-process IPython shell, one real cluster per size.

Starting ranks costs seconds, so tests that only run cells share a session
cluster; the ``nranks`` parameter groups them so each size starts once.
Tests that kill or break a cluster start their own.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Ranks start only when a test asks (the mxnb kernel spec sets its own value).
os.environ.pop("MXNB_PRESTART", None)

from procs import cluster_processes


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI timeout, ``kill``) unwinds as Ctrl-C does:
    fixtures tear down, so no cluster, network-namespace host or Slurm daemon
    a test started outlives the run."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


#: Seconds one test may run before its threads' stacks are printed and it is
#: interrupted: a hang then fails one test, where CI would otherwise wait out
#: its whole limit and print nothing about where (a run lost so).
TEST_LIMIT = float(os.environ.get("MXNB_TEST_LIMIT", "900"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    timer = threading.Timer(TEST_LIMIT, _overran, (item,))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


def _overran(item: pytest.Item) -> None:
    """Where every thread is, then SIGTERM to the main thread: KeyboardInterrupt
    there, which a waiting cell takes as the stop button."""
    frames = sys._current_frames()
    text = [f"\n{item.nodeid} ran longer than {TEST_LIMIT:g} s; where its threads are:"]
    for thread in threading.enumerate():
        if thread.ident in frames:
            text.append(f"--- thread {thread.name}")
            text += [ln.rstrip() for ln in traceback.format_stack(frames[thread.ident])]
    capture = item.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # to the terminal, past the test's capture
        sys.stderr.write("\n".join(text) + "\n")
        sys.stderr.flush()
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ip() -> Iterator[Any]:
    """An IPython shell in this process with the extension loaded."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "mxnb")
    yield shell
    shell.run_line_magic("mxdist", "stop")


@pytest.fixture(scope="session")
def magics(ip: Any) -> Any:
    """The shell's MxdistSession: its cluster, settings and last result."""
    return ip.magics_manager.registry["MxdistMagics"].session


@pytest.fixture(scope="session", params=[2, 4], ids=lambda n: f"{n}ranks")
def nranks(request: pytest.FixtureRequest, ip: Any, magics: Any) -> Iterator[int]:
    """A running cluster of 2, then 4, ranks behind the shell's magic."""
    from mxnb.kernel.cluster import DEFAULT_NP

    n = request.param
    if n == DEFAULT_NP and magics.cluster is None:
        # a bare %%mxdist starts the documented default size
        ip.run_cell_magic("mxdist", "", "pass")
    else:
        ip.run_line_magic("mxdist", f"-n {n}")
    assert magics.cluster is not None and magics.cluster.n == n
    yield n
    profile = magics.cluster.profile_dir if magics.cluster else None
    ip.run_line_magic("mxdist", "stop")
    if profile:
        from procs import wait_gone

        assert wait_gone(profile, 10) == []


@pytest.fixture
def run(ip: Any, nranks: int, magics: Any) -> Any:
    """Run a %%mxdist cell on the shared cluster; returns what the magic returns.

    A test that fails between stopping the cluster and its own restart leaves
    none: the next test gets fresh ranks, not a failure of its own.
    """
    if magics.running_n != nranks:
        ip.run_line_magic("mxdist", f"-n {nranks}")

    def _run(code: str, line: str = "") -> Any:
        if "-n" not in line.split():
            line = f"-n {nranks} {line}"
        return ip.run_cell_magic("mxdist", line, code)

    return _run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import time

    # a kernel killed by the last test is cleaned up by its watchdog within seconds
    deadline = time.monotonic() + 15
    left = cluster_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = cluster_processes()
    if left:
        print("\nmxnb test session left cluster processes:", [p.pid for p in left])
        for p in left:
            try:
                p.kill()
            except Exception:
                pass
        session.exitstatus = 1
