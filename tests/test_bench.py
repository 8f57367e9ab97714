"""Benchmark smoke run: every benchmark runs and the JSON has every row.

The numbers of a --quick run on a busy CI machine mean nothing; the full run
and its last results are in bench/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hosts import unavailable

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    names = [r["name"] for r in data["results"]]
    for part in ("widget payload", "warm trivial cell", "cold start", "start-up scaling",
                 "all_sum 1KB, 2 ranks", "all_sum 1MB, 4 ranks", "--bare",
                 "recording alone (--no-check)", "tracing+checks on / --bare, same ranks",
                 "mxnb kernel (background)", "us of Python before each op",
                 "the least Python observer", "compiled train step",
                 "widget state,", "render in Chromium", "live strip update",
                 "2 ranks, ring, --bare", "ring beside mpi",
                 "stock ipyparallel MPI cluster", "engine-import floor",
                 *(() if unavailable() else ("8 ranks on 2 hosts",))):  # fmt: skip
        assert any(part in n for n in names), (part, names)
    for r in data["results"]:
        assert r["mxnb"] > 0 and r["baseline"] > 0, r
    # the compiled observer needs a C compiler and Python's headers: measured, or said why not
    compiled = any("the least observer, compiled" in n for n in names)
    assert compiled or "the least observer, compiled: not measured (" in proc.stdout
    assert "benchmark" in proc.stdout and "wrote" in proc.stdout


def _cases():
    sys.path.insert(0, str(ROOT / "bench"))
    import cases

    return cases


def test_standalone_job_times_its_loop_on_demand_and_ends():
    """The baseline that stays up: it answers each request, its ranks wait
    without spinning in between, and closing it leaves no process or FIFO."""
    import os
    import time

    import psutil

    cases = _cases()
    job = cases.Standalone(2)
    try:
        first = job.allsum(1024, 50)
        ranks = psutil.Process(job.job.pid).children(recursive=True)
        assert ranks
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in ranks)
        time.sleep(1.0)  # waiting for the next request: blocking reads, no spinning
        idle = sum(p.cpu_times().user + p.cpu_times().system for p in ranks) - cpu
        second = job.allsum(2**20, 5)
    finally:
        job.close()
    assert 0 < first < second, (first, second)
    assert idle < 0.2, f"the job's ranks used {idle:.2f} CPU s while idle"
    assert job.job.poll() is not None and not os.path.exists(job.dir)
    assert not [p for p in ranks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_standalone_job_that_died_raises_instead_of_hanging():
    cases = _cases()
    job = cases.Standalone(2, timeout=20)
    try:
        job.allsum(1024, 5)
        job.job.terminate()
        job.job.wait(30)
        with pytest.raises(RuntimeError, match="standalone job"):
            job.allsum(1024, 5)
    finally:
        job.close()
