"""No frozen notebooks: every way a distributed cell can go wrong ends in a report.

Each scenario runs on the shared 2- and 4-rank clusters.  Where the ranks are
left blocked inside MPI the job must be stopped; the next cell must then start
fresh ranks of the same size, and nothing of the old job may be left running.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mxnb.errors import RankError
from mxnb.protocol.wording import ranks_text
from mxnb.views.outcome import strip_ansi
from procs import stop_output_relay, stop_relay, wait_gone

pytestmark = pytest.mark.cluster


def failing(run, code, line=""):
    """Run a cell that must fail; return (error, its rendered text, seconds)."""
    t0 = time.monotonic()
    with pytest.raises(RankError) as info:
        run(code, line)
    text = strip_ansi("\n".join(info.value._render_traceback_()))
    return info.value, text, time.monotonic() - t0


def assert_kept(run, magics, profile):
    assert magics.cluster is not None and magics.cluster.profile_dir == profile
    run("after = rank")
    assert magics.cluster.profile_dir == profile


def assert_restarted(run, magics, profile, nranks, capsys):
    assert magics.cluster is None
    assert wait_gone(profile, 15) == []
    capsys.readouterr()
    run("print('fresh', size)")
    out = capsys.readouterr().out
    assert "the previous ranks were stopped" in out
    assert f"starting {nranks} MPI ranks" in out
    assert f"[rank {nranks - 1}] fresh {nranks}" in out


RAISE_THEN_SUM = (
    "if rank == 1:\n"
    "    raise ValueError('boom on one rank')\n"
    "total = mx.distributed.all_sum(mx.ones(3))\n"
    "print(total)\n"
)


def test_exception_while_others_wait_checked(run, nranks, magics):
    profile = magics.cluster.profile_dir
    err, text, took = failing(run, RAISE_THEN_SUM)
    assert took < 10
    assert "--- rank 1 raised ValueError ---" in text and "boom on one rank" in text
    for r in range(nranks):
        if r != 1:
            assert f"rank {r}: waiting for the other ranks of world" in text
            assert "all_sum #1 of float32[3]" in text and "line 3" in text
    assert "Likely cause: rank 1 raised an exception without calling all_sum" in text
    assert "the cluster is ready for the next cell (variables kept)" in text
    assert "KeyboardInterrupt" not in text and "CommInterrupted" not in text
    assert err.ranks  # the failing rank (and the interrupted ones) are named
    assert_kept(run, magics, profile)


def test_exception_while_others_blocked_in_mpi(run, nranks, magics, capsys):
    profile = magics.cluster.profile_dir
    _, text, took = failing(run, RAISE_THEN_SUM, "--no-check")
    assert took < 10
    assert "--- rank 1 raised ValueError ---" in text
    assert "rank 0: blocked in print of an array at cell" in text and "line 4" in text
    assert "which needs all_sum #1" in text
    assert "Likely cause: rank 1 raised an exception without calling all_sum" in text
    assert "the MPI job was stopped" in text and "variables on the ranks are lost" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_collective_on_only_some_ranks(run, nranks, magics):
    profile = magics.cluster.profile_dir
    last = nranks - 1
    _, text, took = failing(
        run, f"if rank != {last}:\n    print(mx.distributed.all_sum(mx.ones(2)))"
    )
    assert took < 10
    assert f"Likely cause: rank {last} finished the cell without calling all_sum" in text
    assert_kept(run, magics, profile)


def test_recv_without_send(run, nranks, magics):
    profile = magics.cluster.profile_dir
    _, text, took = failing(
        run, "if rank == 0:\n    print(mx.distributed.recv((2,), mx.float32, 1))"
    )
    assert took < 10
    assert (
        "Likely cause: rank 0 waits in recv #1 from rank 1, but rank 1 finished the "
        "cell without sending to rank 0." in text
    )
    assert_kept(run, magics, profile)


def test_recv_from_itself(run, nranks, magics):
    profile = magics.cluster.profile_dir
    _, text, took = failing(
        run, "if rank == 0:\n    print(mx.distributed.recv((2,), mx.float32, src=rank))"
    )
    assert took < 10
    assert (
        "Likely cause: rank 0 waits in recv #1 from rank 0, itself, and calls no send to "
        "itself, so no rank can be the other end: src is the rank that sends the message"
    ) in text
    assert_kept(run, magics, profile)


def test_collective_called_but_never_evaluated(run, nranks, magics, capsys):
    """The last rank takes the gradient of a sum of an all_sum: MLX's gradient
    does not need the all_sum's value, so it never runs there, while the
    other ranks evaluate the sum.  Before, no cause was definite: the cell ran
    until its timeout (without one, forever).  The last rank's half of the
    check went out with its call, so the others pass it and wait inside MPI,
    where no interrupt reaches: the job is stopped, and the report says why."""
    profile = magics.cluster.profile_dir
    last = nranks - 1
    _, text, took = failing(
        run,
        "def f(w):\n"
        "    return mx.distributed.all_sum(w * 2).sum()\n"
        "w = mx.ones(3)\n"
        f"print(mx.grad(f)(w) if rank == {last} else f(w))\n",
    )
    assert took < 15
    assert (
        f"Likely cause: rank {last} finished the cell without evaluating its all_sum #1 "
        "(collective #1 on world"
    ) in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_send_never_evaluated(run, nranks, magics):
    profile = magics.cluster.profile_dir
    _, text, took = failing(
        run,
        "if rank == 1:\n"
        "    s = mx.distributed.send(mx.ones(4), 0)  # never evaluated\n"
        "elif rank == 0:\n"
        "    print(mx.distributed.recv((4,), mx.float32, 1))\n",
    )
    assert took < 10
    assert (
        "Likely cause: rank 1 finished the cell without evaluating its send #1 to rank 0." in text
    )
    assert "rank 1: finished the cell; never evaluated: send #1 to rank 0 of float32[4]" in text
    # rank 0 waited in its check, before any data moved: no need to stop the job
    assert "rank 0: waiting for rank 1 to send to this rank in recv #1" in text
    assert_kept(run, magics, profile)


#: Even ranks call all_sum, odd ranks all_gather.
MIXED_COLLECTIVES = (
    "x = mx.ones(4)\n"
    "y = mx.distributed.all_sum(x) if rank % 2 == 0 else mx.distributed.all_gather(x)\n"
    "mx.eval(y)\n"
)


def test_different_collectives_are_refused_when_checked(run, nranks, magics):
    profile = magics.cluster.profile_dir
    err, _text, _ = failing(
        run,
        MIXED_COLLECTIVES,
    )
    assert err.ranks == list(range(nranks))
    evens = ", ".join(str(r) for r in range(0, nranks, 2))
    odds = ", ".join(str(r) for r in range(1, nranks, 2))
    assert "CommMismatch: collective mismatch on world" in str(err)
    assert "called all_sum" in str(err) and "called all_gather" in str(err)
    assert evens in str(err) and odds in str(err)
    assert_kept(run, magics, profile)


def test_different_collectives_unchecked_time_out(run, nranks, magics, capsys):
    profile = magics.cluster.profile_dir
    _, text, took = failing(
        run,
        MIXED_COLLECTIVES,
        "--no-check --timeout 3",
    )
    assert took < 3 + 10
    assert "the cell timed out after 3 s" in text
    for r in range(nranks):
        assert f"rank {r}: blocked in mx.eval at cell" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_timeout_in_python_code_interrupts_and_keeps_the_cluster(run, nranks, magics):
    profile = magics.cluster.profile_dir
    _, text, took = failing(run, "import time\nif rank == 1:\n    time.sleep(60)\n", "--timeout 2")
    assert took < 2 + 10
    assert "the cell timed out after 2 s" in text
    assert "rank 1: running cell In[" in text and "time.sleep(60)" in text
    assert "rank 1 was interrupted; the cluster is ready" in text
    assert_kept(run, magics, profile)


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("os._exit(3)", "rank 1 exited with code 3; the MPI job ended."),
        (
            "os.kill(os.getpid(), signal.SIGKILL)",
            "rank 1 was killed by signal 9 (Killed); the MPI job ended.",
        ),
        # a fatal signal Python's faulthandler sees: the rank says where it was
        (
            "ctypes.string_at(0)",
            "rank 1 was killed by signal 11 (Segmentation fault) at "
            "line 4 (ctypes.string_at(0)); the MPI job ended.",
        ),
    ],
    ids=["exit", "sigkill", "segfault"],
)
def test_rank_crash_is_reported_and_recovered(run, nranks, magics, capsys, how, said):
    profile = magics.cluster.profile_dir
    _, text, took = failing(
        run,
        f"import os, signal, ctypes, time\nif rank == 1:\n    {how}\ntime.sleep(30)\n",
    )
    assert took < 10
    assert "a rank died" in text
    assert said in text
    assert "mpiexec reported:" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_collectives_run_in_different_orders_end_the_cell_with_the_cause(
    run, nranks, magics, capsys
):
    """Every rank calls a (1M floats) then b (2M); the last rank evaluates b first.
    The checks compare calls, which agree, and MPI pairs the runs: buffers of
    different sizes.  Then the last rank dies writing past a buffer, or the
    ranks wait for each other forever, or some finish and the last rank waits
    in a, which nobody runs with it (MPI's algorithm and timing decide).  Each
    way the cell ends in seconds, saying why, instead of at its timeout."""
    profile = magics.cluster.profile_dir
    _, text, took = failing(
        run,
        "a = mx.distributed.all_sum(mx.ones(1 << 20))\n"
        "b = mx.distributed.all_sum(mx.ones(1 << 21))\n"
        "if rank == size - 1:\n"
        "    mx.eval(b)\n    mx.eval(a)\n"
        "else:\n"
        "    mx.eval(a)\n    mx.eval(b)\n",
        "--timeout 60",
    )
    assert took < 20
    last = nranks - 1
    died = f"rank {last} was killed by signal 6 (Aborted) at line 6 (mx.eval(a)), while evaluating"
    ahead = f"rank {last} runs all_sum #2 of float32[2097152] before its all_sum #1"
    behind = f"rank {last} runs all_sum #1 of float32[1048576] after its all_sum #2"
    assert died in text or ahead in text or behind in text, text
    assert "in the same order on every rank" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_the_pid_of_the_dead_process_from_the_launcher():
    from mxnb.kernel.recovery import dead_pid

    message = "prterun noticed that process rank 1 with PID 4242 on node vm exited on"
    assert dead_pid(message) == 4242
    assert dead_pid("nothing") is None


def test_crash_sentences_from_launcher_messages():
    from mxnb.kernel.recovery import crash_sentence, launcher_message

    out = "Traceback ...\nboom\n-----\nprterun noticed that process rank 2 with PID 0 on node vm "
    out += "exited on\nsignal 6 (Aborted).\n-----"
    msg = launcher_message(out)
    assert msg.startswith("-----") and "Traceback" not in msg
    assert crash_sentence(msg) == "rank 2 was killed by signal 6 (Aborted); the MPI job ended."
    assert crash_sentence("   Process name: [prterun-vm-1@1,3]\n   Exit code:    7") == (
        "rank 3 exited with code 7; the MPI job ended."
    )
    assert crash_sentence("nothing useful") is None


def press_stop(run, magics, monkeypatch, code, line=""):
    """Run ``code`` and press the stop button (SIGINT to the kernel) after 2 s."""
    # mxnb would explain the hang itself after stall_grace (2 s): here the
    # user presses stop first, so the watcher must not win a race with it
    monkeypatch.setattr(magics, "stall_grace", 60.0)
    # A kernel turns SIGINT into KeyboardInterrupt while it runs a cell; a test
    # run started in the background by a shell inherits SIGINT ignored instead.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        return failing(run, code, line)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler)


def test_stop_button_ends_a_hung_cell(run, nranks, magics, capsys, monkeypatch):
    """SIGINT to the kernel process is what Jupyter's stop button sends."""
    profile = magics.cluster.profile_dir
    _, text, took = press_stop(
        run, magics, monkeypatch,
        "if rank != 0:\n    print(mx.distributed.all_sum(mx.ones(2)))\n", "--no-check",
    )  # fmt: skip
    assert took < 2 + 10
    assert "the cell was interrupted" in text
    assert "rank 1: blocked in print of an array" in text
    assert_restarted(run, magics, profile, nranks, capsys)


# -- cycles of waits inside MLX: every check passed, yet no rank can go on ----------

#: The first bug a new user writes: send right, receive from the left, one mx.eval.
RING_SHIFT = (
    "right, left = (rank + 1) % size, (rank - 1) % size\n"
    "x = mx.full((4,), float(rank))\n"
    "sent = mx.distributed.send(x, right)\n"
    "got = mx.distributed.recv_like(x, left)\n"
    "mx.eval(sent, got)\n"
)
#: Ranks 0 and 1 trade arrays; on 4 ranks, 2 and 3 pair up the same way.
PAIRWISE = (
    "peer = rank ^ 1\n"
    "x = mx.full((4,), float(rank))\n"
    "mx.eval(mx.distributed.send(x, peer), mx.distributed.recv_like(x, peer))\n"
)
#: Ranks 0-2 shift around a ring of three; rank 3 has nothing to do.
RING_OF_THREE = (
    "if rank < 3:\n"
    "    x = mx.full((4,), float(rank))\n"
    "    sent = mx.distributed.send(x, (rank + 1) % 3)\n"
    "    got = mx.distributed.recv_like(x, (rank - 1) % 3)\n"
    "    mx.eval(sent, got)\n"
)
CYCLES = {"ring": RING_SHIFT, "pairwise": PAIRWISE, "ring-of-three": RING_OF_THREE}


def cycle_ranks(case, nranks):
    return {"ring": list(range(nranks)), "pairwise": list(range(nranks))}.get(case, [0, 1, 2])


@pytest.mark.parametrize("case", sorted(CYCLES))
def test_a_cycle_of_waits_returns_by_itself(run, nranks, magics, capsys, case):
    if case == "ring-of-three" and nranks < 4:
        pytest.skip("a cycle of three inside a larger job needs 4 ranks")
    profile = magics.cluster.profile_dir
    _, text, took = failing(run, CYCLES[case])  # no --timeout: mxnb must notice
    assert took < 10
    assert "the cell cannot finish: ranks wait for peers that will not come" in text
    members = cycle_ranks(case, nranks)
    if case == "pairwise" and nranks == 4:
        assert "Likely cause: ranks 0, 1 and ranks 2, 3 wait on each other in cycles" in text
    else:
        assert f"Likely cause: {ranks_text(members)} wait on each other in a cycle" in text
    assert text.count("wait on each other") == 1  # once for all its ranks
    assert "stream=mx.new_stream(mx.cpu)" in text
    for r in members:
        assert f"rank {r}: blocked in mx.eval at cell" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_the_fix_the_report_names_works(run, nranks):
    run(RING_SHIFT.replace("recv_like(x, left)", "recv_like(x, left, stream=mx.new_stream(mx.cpu))")
        + "assert got.tolist() == [float(left)] * 4\n")  # fmt: skip


def test_timeout_names_the_same_cycle(run, nranks, magics, capsys, monkeypatch):
    monkeypatch.setattr(magics, "stall_grace", 60.0)  # the timeout comes first
    profile = magics.cluster.profile_dir
    _, text, took = failing(run, RING_SHIFT, "--timeout 2")
    assert took < 2 + 10
    assert "the cell timed out after 2 s" in text
    assert f"Likely cause: {ranks_text(range(nranks))} wait on each other in a cycle" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_stop_button_names_the_same_cycle(run, nranks, magics, capsys, monkeypatch):
    profile = magics.cluster.profile_dir
    _, text, took = press_stop(run, magics, monkeypatch, RING_SHIFT)
    assert took < 2 + 10
    assert "the cell was interrupted" in text
    assert f"Likely cause: {ranks_text(range(nranks))} wait on each other in a cycle" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_a_failing_viz_cell_still_shows_what_ran(run, nranks, magics):
    import mxnb

    _, text, _ = failing(
        run,
        "y = mx.distributed.all_sum(mx.ones(2))\nmx.eval(y)\n"
        "if rank == 1:\n    raise ValueError('after the all_sum')\n",
        "--viz",
    )
    assert "The trace of what ran is shown above; mxnb.last_trace() returns it." in text
    (step,) = mxnb.last_trace().steps
    assert step.op == "all_sum" and sorted(step.ranks) == list(range(nranks))


def test_a_stalled_viz_cell_shows_what_ran_when_the_ranks_are_kept(run, nranks, magics):
    import mxnb

    _, text, took = failing(run, RAISE_THEN_SUM, "--viz")
    assert took < 10
    assert "the cluster is ready for the next cell (variables kept)" in text
    assert "The trace of what ran is shown above" in text
    trace = mxnb.last_trace()
    assert [s.op for s in trace.steps] == ["all_sum"]  # called, never completed
    assert 1 not in trace.steps[0].ranks
    # the ranks that waited were interrupted inside it: in flight, not skipped
    from mxnb.trace.view import trace_view

    lanes = trace_view(trace).steps[0].lanes
    assert lanes == {r: "missing" if r == 1 else "in_flight" for r in range(nranks)}, lanes
    m = trace.steps[0].ranks[0]
    assert m["eval_note"] == "interrupted" and m["check_s"] > 0
    assert "interrupted while mxnb's check waited for the other ranks" in trace.text()


# -- what the notebook shows while a cell runs, and after a hang ---------------------

SLOW_RANK_1 = (
    "import time\nif rank == 1:\n    time.sleep(2.6)\nmx.eval(mx.distributed.all_sum(mx.ones(2)))\n"
)


def test_a_slow_cell_shows_a_live_strip_of_who_waits_on_whom(run, nranks, magics):
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        run(SLOW_RANK_1)
    shown = [o.data for o in cap.outputs]
    live = [d for d in shown if "text/html" in d and "mxnb-live" in d["text/html"]]
    assert live, shown  # it appeared (after about a second) and was updated
    text = live[-1]["text/plain"]
    assert "rank 0: waits on rank 1 in all_sum #1 of float32[2]" in text
    assert "rank 1: computing, at" in text and "time.sleep(2.6)" in text
    assert shown[-1] == {"text/plain": ""}  # emptied once the cell finished


def test_a_hang_leaves_the_picture_of_who_waits_for_whom(run, nranks, magics, capsys):
    from IPython.utils.capture import capture_output

    profile = magics.cluster.profile_dir
    with capture_output() as cap:
        failing(run, RING_SHIFT)
    pictures = [o.data for o in cap.outputs if "image/png" in o.data]
    assert len(pictures) == 1
    words = pictures[0]["text/plain"]
    assert f"{ranks_text(range(nranks))} wait on each other in a cycle" in words
    assert "Likely cause:" in words
    import base64
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(pictures[0]["image/png"])))
    assert img.width == 760 and img.height > 250
    assert_restarted(run, magics, profile, nranks, capsys)


def test_a_hung_viz_cell_shows_the_ops_the_stopped_ranks_had_called(run, nranks, magics, capsys):
    from IPython.utils.capture import capture_output

    from mxnb.trace.view import trace_view

    profile = magics.cluster.profile_dir
    with capture_output() as cap:
        _, text, _ = failing(run, RING_SHIFT, "--viz")
    assert "the trace shown above lists the ops the ranks had called" in text.lower()
    assert any("image/png" in o.data and "mxnb trace picture" in o.data["text/plain"]
               for o in cap.outputs)  # fmt: skip
    view = trace_view(magics.tracing.trace)
    (step,) = view.steps  # the exchange: each rank's send and recv, as one step
    assert step.op == "send/recv" and step.lanes == dict.fromkeys(range(nranks), "in_flight")
    assert sorted((t.src, t.dst) for t in step.transfers) == [
        (r, (r + 1) % nranks) for r in range(nranks)
    ]
    assert "(lost: the ranks were stopped while blocked in MPI)" in view.text()
    assert_restarted(run, magics, profile, nranks, capsys)


# -- the controller stops relaying: idle ranks whose answers never arrive ------------


def test_answers_that_never_arrive_end_the_cell_with_the_cause(run, nranks, magics, capsys):
    from IPython.utils.capture import capture_output

    from mxnb.kernel.relay import LOST_AFTER

    profile = magics.cluster.profile_dir
    stop_output_relay(magics.cluster)
    with capture_output() as cap:
        _, text, took = failing(run, "x = mx.distributed.all_sum(mx.ones(2))\nprint(x)\n")
    assert took < LOST_AFTER + 10
    shown = [o.data for o in cap.outputs]
    assert any("mxnb-live" in d.get("text/html", "") for d in shown), shown
    assert shown[-1] == {"text/plain": ""}  # the live strip's "computing" is taken back
    assert "the ranks' answers did not reach the notebook" in text
    assert f"{ranks_text(range(nranks))} finished the cell, but what they printed never " \
           "reached the notebook" in text  # fmt: skip
    assert "Likely cause: ipyparallel's controller stopped relaying messages" in text
    assert_restarted(run, magics, profile, nranks, capsys)


def test_answers_lost_before_a_timeout_are_not_called_blocked_in_mpi(run, nranks, magics, capsys):
    """--timeout 2 ends the cell before the lost answers are noticed (5 s)."""
    profile = magics.cluster.profile_dir
    stop_output_relay(magics.cluster)
    _, text, took = failing(run, "print(rank)\n", "--timeout 2")
    assert took < 2 + 10
    assert "the cell timed out after 2 s" in text
    assert "finished the cell, but what they printed never reached the notebook" in text
    assert "Likely cause: ipyparallel's controller stopped relaying messages" in text
    assert "blocked inside an MPI call" not in text
    assert_restarted(run, magics, profile, nranks, capsys)


def _wait_ended(cluster, timeout):
    """Until mpiexec has ended the job, as it does once a rank is gone."""
    deadline = time.monotonic() + timeout
    while not cluster.job_ended():
        assert time.monotonic() < deadline, f"the ranks still ran after {timeout} s"
        time.sleep(0.1)


def test_a_rank_that_died_between_cells_is_explained_and_the_cell_runs_on_fresh_ranks(
    run, nranks, ip, magics, capsys
):
    """No cell ran when the last rank died: the next cell says how it ended and
    that variables are lost, then runs on fresh ranks; nothing of the old job is
    left."""
    run("import os\npid = os.getpid()\nkept = 1")
    cluster, profile = magics.cluster, magics.cluster.profile_dir
    pid = cluster.view.pull("pid", block=True)[-1]
    os.kill(pid, signal.SIGKILL)
    _wait_ended(cluster, 10)
    capsys.readouterr()
    ip.run_line_magic("mxdist", "status")
    assert capsys.readouterr().out == (
        f"mxdist: the {nranks} ranks have ended since the last cell; the next %%mxdist cell "
        "says how, and starts fresh ones\n"
    )
    run("print('fresh', 'kept' in dir(), size)")
    out = strip_ansi(capsys.readouterr().out)
    assert (
        f"mxdist: since the last cell, rank {nranks - 1} was killed by signal 9 (Killed); the "
        "MPI job ended. Fresh ranks start now; variables on the ranks are lost.\n"
        "mpiexec reported:\n" in out
    )
    assert f"process rank {nranks - 1} with PID {pid} on node" in out
    assert f"starting {nranks} MPI ranks" in out
    for r in range(nranks):
        assert f"[rank {r}] fresh False {nranks}" in out
    assert wait_gone(profile, 15) == []


def test_ranks_that_lost_the_controllers_heartbeat_are_explained(ip, magics, capsys):
    """The controller's heart monitor ended between cells: each rank shuts itself
    down once it has missed the heartbeat 50 times (30 s).  The next cell names
    that, not a crash of the cell, and runs on fresh ranks."""
    if magics.cluster is None or not magics.cluster.running:
        ip.run_cell_magic("mxdist", "", "pass")
    cluster = magics.cluster
    n, profile = cluster.n, cluster.profile_dir
    stop_relay(cluster, "engine", "hb_ping")
    _wait_ended(cluster, 60)
    capsys.readouterr()
    ip.run_cell_magic("mxdist", "", "print('fresh', size)")
    out = strip_ansi(capsys.readouterr().out)
    assert "mxdist: since the last cell, " in out
    assert (
        "The ranks shut themselves down: no heartbeat came from ipyparallel's controller "
        "for 30 s (50 checks, 600 ms apart), so its heart monitor had ended or hung. "
        "Fresh ranks start now; variables on the ranks are lost." in out
    )
    assert f"[rank {n - 1}] fresh {n}" in out
    assert wait_gone(profile, 15) == []
