"""500 consecutive cells with collectives on 4 ranks: no error, no memory creep."""

from __future__ import annotations

import psutil
import pytest

import mxnb

pytestmark = pytest.mark.cluster

CELL = (
    "x = mx.arange(1024, dtype=mx.float32) + rank\n"
    "y = mx.distributed.all_sum(x)\n"
    "g = mx.distributed.all_gather(mx.array([rank]))\n"
    "m = mx.distributed.all_max(mx.array([float(rank)]))\n"
    "mx.eval(y, g, m)\n"
    "checksum = float(y[1])\n"
)


def rss_mb(pids):
    return sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20


def test_500_cells_no_errors_no_growth(ip, magics):
    ip.run_cell_magic("mxdist", "-n 4", "pass")
    cluster = magics.cluster
    ranks = cluster.rank_pids([0, 1, 2, 3])
    for _ in range(25):  # warm up allocators and caches
        ip.run_cell_magic("mxdist", "", CELL)
    kernel0, ranks0 = rss_mb([psutil.Process().pid]), rss_mb(ranks)
    want = 4 * 1.0 + (0 + 1 + 2 + 3)  # y[1] = sum over ranks of (1 + rank)
    for i in range(500):
        ip.run_cell_magic("mxdist", "", CELL)
        if i % 100 == 99:
            assert mxnb.pull("checksum") == [want] * 4
    assert magics.cluster is cluster  # never restarted
    kernel_growth = rss_mb([psutil.Process().pid]) - kernel0
    ranks_growth = rss_mb(ranks) - ranks0
    print(
        f"\nRSS growth over 500 cells: kernel {kernel_growth:.1f} MB, ranks {ranks_growth:.1f} MB"
    )
    assert kernel_growth < 50
    assert ranks_growth < 50
