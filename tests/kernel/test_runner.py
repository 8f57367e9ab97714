"""The cell runner on its own cluster: streaming, deadlines, interrupts."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mxnb.kernel import ipp
from mxnb.kernel.cluster import MxCluster
from mxnb.kernel.runner import CellRun, RankStreamer, run_cell

pytestmark = pytest.mark.cluster


class Clocked(RankStreamer):
    """Records when each line reached the notebook side."""

    def __init__(self, ranks):
        super().__init__(ranks)
        self.arrivals: list[tuple[float, int, str]] = []

    def feed(self, rank, name, text, final=False):
        before = self._seen.get((rank, name), 0)
        super().feed(rank, name, text, final)
        if len(text) > before:
            self.arrivals.append((time.monotonic(), rank, text[before:]))


@pytest.fixture(scope="module")
def cluster():
    with MxCluster(n=2) as c:
        yield c


def test_output_streams_while_the_cell_runs(cluster):
    s = Clocked(cluster.view.targets)
    res = run_cell(
        cluster.view,
        "print('early', flush=True)\nimport time\ntime.sleep(2)\nprint('late')",
        streamer=s,
    )
    end = time.monotonic()
    assert res.ok
    early = [t for t, _, text in s.arrivals if "early" in text]
    assert len(early) == 2
    assert all(end - t > 1.5 for t in early), "output arrived only at the end"


def test_timeout_returns_control_and_names_the_slow_rank(cluster):
    t0 = time.monotonic()
    res = run_cell(cluster.view, "import time\nif rank == 1:\n    time.sleep(6)\n", timeout=1.5)
    assert time.monotonic() - t0 < 4
    assert res.timed_out
    assert res.unfinished == [1]
    # let rank 1 finish so the module's cluster stays usable
    res.extra["async_result"].wait(10)


def test_ctrl_c_returns_at_once_and_leaves_ranks_running(cluster):
    # as a kernel does while it runs a cell; a test run started in the
    # background by a shell inherits SIGINT ignored instead
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        res = run_cell(cluster.view, "import time\ntime.sleep(4)\nprint('slept')")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler)
    assert time.monotonic() - t0 < 2
    assert res.interrupted and res.unfinished == [0, 1]
    # the runner does not touch the ranks; they finish on their own
    res.extra["async_result"].wait(10)
    again = run_cell(cluster.view, "print('still here')")
    assert again.ok
    assert [o.stdout for o in again.outcomes] == ["still here\n"] * 2


def test_reading_the_ranks_outcomes_leaves_the_client_s_dates_unparsed(cluster):
    # the client's public metadata parses its dates (dateutil) at every read; the
    # runner reads output, status and results only, and a trivial cell is ~10% cheaper
    run = CellRun(cluster.view, "print('hi')", RankStreamer(cluster.view.targets))
    run.wait(30)
    res = run.finish()
    assert [o.stdout for o in res.outcomes] == ["hi\n"] * 2
    dates = [md.get("completed") for md in ipp.reply_metadata(run.ar)]
    assert all(isinstance(d, str) for d in dates), dates
