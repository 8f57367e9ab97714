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
