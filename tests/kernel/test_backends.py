"""MLX's ring backend behind %%mxdist, and the per-backend preflight, on 2 and 4 real ranks.

The ranks are still started, watched and stopped by mpiexec, and checked mode
still exchanges its metadata over MPI; only MLX's world group is the ring
(TCP sockets between neighbours on the loopback).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mxnb
from collective_cases import EXPECTED, SETUP, inputs
from mxnb.errors import RankError

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}ranks")
def ring(request: pytest.FixtureRequest, ip: Any, magics: Any) -> Iterator[int]:
    """A ring cluster behind the shell's magic; stopped after, so later tests get MPI again."""
    n = request.param
    ip.run_line_magic("mxdist", f"-n {n} --backend ring")
    assert magics.cluster is not None and magics.cluster.backend == "ring"
    yield n
    profile = magics.cluster.profile_dir if magics.cluster else None
    ip.run_line_magic("mxdist", "stop")
    magics.backend = "mpi"  # the session default again
    if profile:
        from procs import wait_gone

        assert wait_gone(profile, 10) == []


def cell(ip: Any, code: str, line: str = "") -> Any:
    return ip.run_cell_magic("mxdist", line, code)


def failure(ip: Any, code: str, line: str = "") -> RankError:
    with pytest.raises(RankError) as info:
        cell(ip, code, line)
    return info.value


def test_status_names_the_backend(ip: Any, magics: Any, ring: int) -> None:
    said = str(magics.cluster.status())
    assert f"mxdist: {ring} ranks, backend ring" in said


def test_the_world_is_mlx_s_own_ring(ip: Any, ring: int) -> None:
    """MLX's own split (under mxnb's hook) refuses: the world is MLX's ring group, not MPI's."""
    cell(ip, "w = (world.rank(), world.size())\nimport os\nmlx_rank = os.environ['MLX_RANK']")
    assert mxnb.pull("w") == [(r, ring) for r in range(ring)]
    assert mxnb.pull("mlx_rank") == [str(r) for r in range(ring)]
    err = failure(ip, "mx.distributed.Group.split.__mxnb_original__(world, rank % 2)")
    assert "[ring] Group split not supported." in str(err)


@pytest.mark.parametrize(("op", "expect"), EXPECTED)
def test_collectives_give_numpy_s_answers_on_the_ring(ip: Any, ring: int, op: str, expect) -> None:
    cell(ip, f"{SETUP}y = mx.distributed.{op}(x)\nmx.eval(y)")
    want = expect(inputs(ring))
    for r, y in enumerate(mxnb.pull("y")):
        np.testing.assert_allclose(y, want, err_msg=f"rank {r}")


def test_a_shift_between_neighbours_works(ip: Any, ring: int) -> None:
    cell(
        ip,
        "nxt, prv = (rank + 1) % size, (rank - 1) % size\n"
        "x = mx.arange(4, dtype=mx.float32) + 10 * rank\n"
        "s = mx.distributed.send(x, nxt)\n"
        "got = mx.distributed.recv((4,), mx.float32, prv, stream=mx.new_stream(mx.cpu))\n"
        "mx.eval(s, got)\n",
    )
    for r, got in enumerate(mxnb.pull("got")):
        np.testing.assert_array_equal(got, np.arange(4) + 10 * ((r - 1) % ring))


def test_split_is_refused_naming_the_backend_and_the_way_out(ip: Any, ring: int) -> None:
    err = failure(ip, "sub = world.split(rank % 2)")
    assert err.ranks == list(range(ring))
    text = str(err)
    assert "BackendUnsupported: Group.split is not available on MLX's ring backend" in text
    assert "--backend mpi" in text


def test_sum_scatter_is_refused_before_it_can_hang(ip: Any, ring: int) -> None:
    text = str(failure(ip, "mx.eval(mx.distributed.sum_scatter(mx.ones(8)))"))
    assert "sum_scatter is not available on MLX's ring backend" in text
    assert "all_sum" in text  # the alternative


def test_a_send_past_a_neighbour_is_refused(ip: Any, ring: int) -> None:
    """On 4 ranks rank 0 cannot reach rank 2; on 2, a rank's only neighbour is the other
    one, so a send to itself is what is refused."""
    far = 2 if ring == 4 else 0
    err = failure(
        ip,
        "if rank == 0:\n"
        f"    mx.eval(mx.distributed.send(mx.ones(2), {far}))\n"
        f"elif rank == {far}:\n"
        "    mx.eval(mx.distributed.recv((2,), mx.float32, 0))\n",
    )
    text = str(err)
    assert err.ranks == sorted({0, far})
    assert f"rank 0: BackendUnsupported: send from rank 0 to rank {far}" in text
    who = "rank 1 and rank 3" if ring == 4 else "rank 1"
    assert f"moves messages only between neighbours ({who})" in text


def test_a_hang_on_the_ring_is_diagnosed_like_one_on_mpi(ip: Any, magics: Any, ring: int) -> None:
    err = failure(ip, "if rank != 1:\n    mx.eval(mx.distributed.all_sum(mx.ones(2)))\n")
    assert err.headline == "the cell cannot finish: ranks wait for peers that will not come"
    assert "Likely cause: rank 1 finished the cell without calling all_sum" in err.report
    # the ranks were kept: the next cell runs on them
    cell(ip, "after = rank")
    assert mxnb.pull("after") == list(range(ring))
    assert magics.cluster.backend == "ring"


def test_the_trace_and_its_views_work_on_the_ring(ip: Any, ring: int) -> None:
    cell(
        ip, "y = mx.distributed.all_sum(mx.arange(3, dtype=mx.float32) + rank)\nmx.eval(y)", "--viz"
    )
    trace = mxnb.last_trace()
    (step,) = trace.steps
    assert step.op == "all_sum" and step.mismatch == []
    want = sum(np.arange(3) + r for r in range(ring))
    for r in range(ring):
        np.testing.assert_array_equal(trace.value(1, r, "after"), want)
    assert mxnb.ring_steps(trace=trace).verdict().startswith("after the last round every rank")


def test_a_hang_inside_the_ring_stops_the_job_and_the_next_cell_starts_a_ring_again(
    ip: Any, magics: Any, ring: int
) -> None:
    """Unchecked, the others wait inside MLX's ring all_sum, where no signal reaches
    them: the diagnosis names rank 1, the job is stopped, and the next cell starts
    ranks on the ring again."""
    err = failure(
        ip, "if rank != 1:\n    mx.eval(mx.distributed.all_sum(mx.ones(2)))\n",
        "--no-check --timeout 20",
    )  # fmt: skip
    assert err.headline == "the cell cannot finish: ranks wait for peers that will not come"
    assert "Likely cause: rank 1 finished the cell without calling all_sum" in err.report
    assert "the MPI job was stopped" in err.note
    cell(ip, "again = (world.size(), rank)")
    assert mxnb.pull("again") == [(ring, r) for r in range(ring)]
    assert magics.cluster.backend == "ring"


def test_targets_and_timeout_work_on_the_ring(ip: Any, ring: int) -> None:
    cell(ip, "picked = rank", "--targets 1")
    assert mxnb.pull("picked", targets=[1]) == [1]
    err = failure(ip, "import time\nif rank == 1:\n    time.sleep(30)\n", "--timeout 2")
    assert err.headline == "the cell timed out after 2 s"
    assert "rank 1 was interrupted; the cluster is ready for the next cell" in err.note
    cell(ip, "still = world.size()")
    assert mxnb.pull("still") == [ring] * ring


def test_changing_the_backend_restarts_and_says_so(
    ip: Any, magics: Any, ring: int, capsys: pytest.CaptureFixture[str]
) -> None:
    cell(ip, "on_mpi = world.size()", f"--backend mpi -n {ring}")
    said = capsys.readouterr().out
    assert (
        "mxdist: restarting on the mpi backend (was ring); variables on the ranks are lost." in said
    )
    assert magics.cluster.backend == "mpi" and mxnb.pull("on_mpi") == [ring] * ring
    ip.run_line_magic("mxdist", f"-n {ring} --backend ring")  # back, for the next tests
    assert magics.cluster.backend == "ring"


def test_the_kernel_writes_the_ring_s_hostfile_on_one_host_only(tmp_path: Path) -> None:
    """Across hosts only a rank knows its free ports: the ranks write it (mxnb.rank.ringhosts)."""
    from mxnb.kernel.backends import backend_env

    env = backend_env("ring", 3, str(tmp_path))
    nodes = json.loads(Path(env["MLX_HOSTFILE"]).read_text())
    assert env["MXNB_BACKEND"] == "ring" and len({n[0] for n in nodes}) == 3
    assert all(len(n) == 1 and n[0].startswith("127.0.0.1:") for n in nodes)
    assert backend_env("ring", 3, str(tmp_path), spans_hosts=True) == {"MXNB_BACKEND": "ring"}
    assert backend_env("mpi", 3, None) == {"MXNB_BACKEND": "mpi"}
