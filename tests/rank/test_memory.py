"""MLX's memory use is kept: a default %%mxdist cell peaks where plain MLX does.

MLX hands an op's output buffer to the next op when nothing else holds the
array.  A check or a trace that kept a reference would stop that and raise the
peak.  The baseline is the same code in a plain ``mpiexec`` job without mxnb,
run in the same test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mxnb.kernel.openmpi import find_openmpi, launch_env, mpiexec_args

pytestmark = pytest.mark.cluster

#: 4 MB per rank in; all_sum's output is a temporary that ``* 2`` may reuse.
#: The peak is counted from the memory in use before the op (earlier cells on a
#: shared cluster hold arrays of their own).
PEAK = (
    "x = y = None\n"
    "mx.clear_cache()  # no buffer left over from earlier cells to reuse\n"
    "x = mx.random.normal((1 << 20,), key=mx.random.key(rank))\n"
    "mx.eval(x)\n"
    "mx.reset_peak_memory()\n"
    "base = mx.get_active_memory()\n"
    "y = mx.distributed.all_sum(x) * 2.0\n"
    "mx.eval(y)\n"
    "peak = mx.get_peak_memory() - base\n"
)


def plain_peaks(n: int) -> dict[int, int]:
    """The peak of PEAK on each rank of a plain MLX job (no mxnb anywhere)."""
    mpi = find_openmpi()
    env = {**os.environ, **launch_env(mpi)}
    script = (
        "import mlx.core as mx\n"
        "world = mx.distributed.init(strict=True, backend='mpi')\n"
        "rank, size = world.rank(), world.size()\n" + PEAK + "print(rank, peak)\n"
    )
    args = [str(mpi.mpiexec), "-n", str(n), *mpiexec_args(n, launch_env(mpi))]
    out = subprocess.run(
        [*args, sys.executable, "-c", script],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return {int(r): int(p) for r, p in (line.split() for line in out.splitlines() if line)}


def peaks(run, magics, line: str = "") -> dict[int, int]:
    run(PEAK, line)
    return dict(enumerate(magics.pull("peak")))


def test_a_default_cell_peaks_where_plain_mlx_does(run, nranks, magics):
    plain = plain_peaks(nranks)
    assert len(plain) == nranks
    assert peaks(run, magics) == plain  # recording and checking on, as by default
    assert peaks(run, magics, "--no-check") == plain


def test_the_trace_says_why_it_has_no_value_for_a_released_array(run, nranks, magics):
    import mxnb

    run(PEAK)
    (step,) = mxnb.last_trace().steps
    assert step.snap(0, "before")[1] == "ok"  # x: the cell still holds it
    assert step.snap(0, "after")[1] == "released"  # all_sum's output went into y
    assert "the cell let go of it, so MLX could reuse its memory" in mxnb.last_trace().text()


def test_viz_keeps_values_and_says_what_that_costs(run, nranks, magics):
    import mxnb

    plain = plain_peaks(nranks)
    viz = peaks(run, magics, "--viz")
    assert all(viz[r] > plain[r] for r in plain)  # the kept all_sum output
    trace = mxnb.last_trace()
    (step,) = trace.steps
    assert step.snap(0, "after")[1] == "ok"
    assert "--viz kept every op's input and output" in trace.text()
