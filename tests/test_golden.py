"""Golden-output tests: every text a user reads, compared with ``tests/golden/<case>.txt``.

Each case renders one message from hand-made, fixed inputs (no cluster is
started) and compares it with its golden file, so a change of wording is
reviewed as a diff of what the notebook shows.  After an intended change::

    MXNB_UPDATE_GOLDEN=1 pytest tests/test_golden.py

then read the changed ``.txt`` files as a user would before committing them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

# All of mxnb that these cases touch, in one block.
import mxnb
from golden import check_golden
from mxnb.errors import BackendUnsupported, RankError, UnsupportedReduction
from mxnb.kernel.causes import compile_cache_cause
from mxnb.kernel.cluster import ClusterStatus
from mxnb.kernel.diagnose import diagnose
from mxnb.kernel.magics import MxdistMagics, parse_targets
from mxnb.kernel.openmpi import OpenMPI
from mxnb.kernel.recovery import between_cells, crash_report
from mxnb.kernel.relay import RelayLost, check_relays, lost_report
from mxnb.kernel.runner import CellResult, RankOutcome
from mxnb.kernel.session import HEADLINES, cost_note
from mxnb.protocol.ops import Meta
from mxnb.rank.backend import bool_trap, refuse
from mxnb.rank.check import PendingCheck, _collective_problem, _p2p_problem
from mxnb.rank.groups import GroupInfo
from mxnb.rank.oprecord import OpRecord
from mxnb.rank.pairing import order_problem
from mxnb.trace import Trace
from mxnb.views.outcome import RankResults
from trace_reports import op, report

# -- trace reports (as mxnb.rank.recorder.collect ships them) -----------------


ALL_SUM = "y = mx.distributed.all_sum(x)"
#: Fixed evaluation times per rank, so the timings read like a real run.
EVAL_S = [0.0031, 0.0029, 0.0034, 0.0030]


def one_collective(
    name: str, ins: list[np.ndarray], outs: list[np.ndarray], code: str, line: int = 2
) -> Trace:
    """A cell whose only op is one collective on the world, rank r passing ``ins[r]``."""
    n = len(ins)
    return Trace([
        report(r, [op(1, name, r, ins[r], outs[r], n=n, line=line, code=code, eval_s=EVAL_S[r])],
               n=n)
        for r in range(n)
    ])  # fmt: skip


def test_trace_all_sum_agrees() -> None:
    xs = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(4)]
    trace = one_collective("all_sum", xs, [sum(xs)] * 4, ALL_SUM)
    check_golden("trace-all-sum-agrees", trace.text())


def test_trace_all_sum_inputs_differ() -> None:
    """Rank 3 passed int32 (with --no-check): MPI mixed the bytes, so it disagrees too."""
    ins = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(3)]
    ins.append(np.arange(4, dtype=np.int32) * 4)
    floats = np.array([0, 6, 12, 18], np.float32)
    garbage = np.array([0, 1086324736, 1094713344, 1099956224], np.int32)
    trace = one_collective("all_sum", ins, [floats] * 3 + [garbage], ALL_SUM, line=3)
    check_golden("trace-all-sum-inputs-differ", trace.text())


def test_trace_all_gather_2d() -> None:
    xs = [np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * r for r in range(4)]
    code = "g = mx.distributed.all_gather(x)"
    trace = one_collective("all_gather", xs, [np.concatenate(xs)] * 4, code)
    check_golden("trace-all-gather-2d", trace.text())


def test_ring_steps_of_all_sum() -> None:
    """What ``mxnb.ring_steps()`` reads as outside a notebook: every round, then the verdict."""
    xs = [np.arange(8, dtype=np.float32) + 10 * r for r in range(4)]
    trace = one_collective("all_sum", xs, [sum(xs)] * 4, ALL_SUM)
    check_golden("ring-steps-all-sum", repr(mxnb.ring_steps(trace=trace)))


def test_trace_send_recv_ring_shift() -> None:
    """Every rank sends to the next and receives from the previous, in one mx.eval(a, b).

    ``recv_like`` records its template's shape and dtype as input, no values.
    """
    n = 4
    xs = [np.full(3, r, np.float32) for r in range(n)]
    send_code = "a = mx.distributed.send(x, (rank + 1) % size)"
    recv_code = "b = mx.distributed.recv_like(x, (rank - 1) % size)"
    timing: dict[str, Any] = {"n": n, "eval_s": 0.0041, "eval_ops": 2}
    reps = []
    for r in range(n):
        prev = (r - 1) % n
        send = op(1, "send", r, xs[r], xs[r], peer=(r + 1) % n, line=2, code=send_code, **timing)
        recv = op(2, "recv_like", r, xs[r], xs[prev], peer=prev, line=3, code=recv_code,
                  states={"before": "template"}, **timing)  # fmt: skip
        reps.append(report(r, [send, recv], n=n))
    check_golden("trace-send-recv-ring", Trace(reps).text())


def test_trace_op_never_evaluated() -> None:
    """The all_max result is never used: MLX never ran it, so there is no value."""
    xs = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(2)]
    code = "z = mx.distributed.all_max(x)"
    reps = []
    for r in range(2):
        ops = [
            op(1, "all_sum", r, xs[r], xs[0] + xs[1], line=2, code=ALL_SUM, eval_s=EVAL_S[r]),
            op(2, "all_max", r, xs[r], xs[1], line=3, code=code, states={"after": "lazy"}),
        ]
        reps.append(report(r, ops))
    check_golden("trace-lazy", Trace(reps).text())


def test_trace_compiled_loop() -> None:
    """Three calls of a compiled function: each replay of its all_sum is an op
    of its own, found where the evaluation ran it; no value reaches Python."""
    code = "return mx.distributed.all_sum(v) / size"
    inside = {"before": "compiled", "after": "compiled"}
    reps = []
    for r in range(2):
        x = np.ones(3, dtype=np.float32)
        ops = [op(k, "all_sum", r, x, x, line=3, code=code, states=dict(inside),
                  eval_s=EVAL_S[r]) for k in (1, 2, 3)]  # fmt: skip
        for m in ops:
            m["call_s"] = None  # no Python call of its own
        reps.append(report(r, ops))
    check_golden("trace-compiled-loop", Trace(reps).text())


def test_trace_collectives_run_in_different_orders() -> None:
    """Both ranks call all_sum a then b; rank 0 evaluates a first, rank 1 b first.
    MPI paired rank 0's a with rank 1's b (the values measured on 2 ranks)."""
    a_code, b_code = "a = mx.distributed.all_sum(x)", "b = mx.distributed.all_sum(x * 10)"
    xs = [np.array([1.0, 2.0], np.float32) * (r + 1) for r in range(2)]
    got = {0: ([21.0, 42.0], [12.0, 24.0]), 1: ([12.0, 24.0], [21.0, 42.0])}
    runs = {0: (1, 2), 1: (2, 1)}  # which evaluation ran a, b on each rank
    reps = []
    for r in range(2):
        a = op(1, "all_sum", r, xs[r], np.array(got[r][0], np.float32), line=2, code=a_code)
        b = op(2, "all_sum", r, xs[r] * 10, np.array(got[r][1], np.float32), line=3,
               code=b_code)  # fmt: skip
        a["eval_no"], b["eval_no"] = runs[r]
        reps.append(report(r, [a, b]))
    check_golden("trace-run-in-different-orders", Trace(reps).text())


def test_trace_vmapped_all_sum() -> None:
    """An all_sum inside mx.vmap over 3 examples: MLX ran it on the batch,
    and Python held only one example's placeholder."""
    code = "f = mx.vmap(lambda v: mx.distributed.all_sum(v))"
    reps = []
    for r in range(2):
        x = np.ones((3, 2), dtype=np.float32)
        one = op(1, "all_sum", r, x, x, line=2, code=code,
                 states={"before": "vmapped", "after": "vmapped"})  # fmt: skip
        one["eval_s"], one["eval_note"] = None, "vmapped"
        reps.append(report(r, [one]))
    check_golden("trace-vmapped", Trace(reps).text())


def test_trace_two_recvs_in_one_eval_unchecked() -> None:
    """--no-check: rank 1 evaluates two recvs from rank 0 together; both are marked."""
    ones, twos = np.ones(4, np.float32), np.full(4, 2, np.float32)
    sends = [
        op(1, "send", 0, ones, ones, peer=1, line=3, code="mx.eval(send(ones, 1))"),
        op(2, "send", 0, twos, twos, peer=1, line=4, code="mx.eval(send(twos, 1))"),
    ]
    recvs = [
        op(1, "recv", 1, None, twos, peer=0, line=6, code="a = recv((4,), mx.float32, 0)"),
        op(2, "recv", 1, None, ones, peer=0, line=7, code="b = recv((4,), mx.float32, 0)"),
    ]
    recvs[0]["unordered"], recvs[1]["unordered"] = [2], [1]
    check_golden("trace-unordered-recvs", Trace([report(0, sends), report(1, recvs)]).text())


def test_trace_released_and_kept() -> None:
    """``y = all_sum(x) * 2``: by default the temporary all_sum result is not kept."""
    xs = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(2)]
    code = "y = mx.distributed.all_sum(x) * 2.0"
    reps = [report(r, [op(1, "all_sum", r, xs[r], None, line=2, code=code,
                          states={"after": "released"})]) for r in range(2)]  # fmt: skip
    check_golden("trace-released", Trace(reps).text())
    kept = [report(r, [op(1, "all_sum", r, xs[r], xs[0] + xs[1], line=2, code=code)])
            for r in range(2)]  # fmt: skip
    for rep in kept:
        rep["kept"] = True
    check_golden("trace-kept", Trace(kept).text())


def test_trace_split_group() -> None:
    """``sub = world.split(rank % 2)``: one all_sum on the evens, one on the odds."""
    n = 4
    code = "s = mx.distributed.all_sum(x, group=sub)"
    reps = []
    for r in range(n):
        path = f"split #1 color {r % 2}"  # the first split of the world, colour r % 2
        members = [m for m in range(n) if m % 2 == r % 2]
        x = np.array([r, 1], np.float32)
        y = np.array([sum(members), len(members)], np.float32)
        sub = {"group": path, "group_rank": r // 2, "n": 2}
        ops = [op(1, "all_sum", r, x, y, line=3, code=code, eval_s=EVAL_S[r], **sub)]
        reps.append(report(r, ops, n=n, groups={path: members}))
    check_golden("trace-split-group", Trace(reps).text())


def test_trace_large_array_is_downsampled() -> None:
    """512x512 values (one NaN): min/max/mean of the whole array and the grid shown."""
    xs = []
    for r in range(2):
        x = np.arange(512 * 512, dtype=np.float32).reshape(512, 512) * (r + 1)
        if r == 1:
            x[0, 0] = np.nan
        xs.append(x)
    total = xs[0] + xs[1]
    reps = [
        report(r, [op(1, "all_sum", r, xs[r], total, line=2, code=ALL_SUM, eval_s=0.0187)])
        for r in range(2)
    ]
    check_golden("trace-large-downsampled", Trace(reps).text())


def test_trace_send_without_recv_and_wrong_dtype() -> None:
    """Rank 0 sends twice; rank 1 receives once, as int32."""
    a, b = np.ones(4, np.float32), np.ones(4, np.int32)
    send = "mx.eval(mx.distributed.send(x, 1))"
    recv = "y = mx.distributed.recv((4,), mx.int32, 0)"
    reps = [
        report(0, [op(1, "send", 0, a, a, peer=1, line=2, code=send),
                   op(2, "send", 0, a, a, peer=1, line=3, code=send)]),
        report(1, [op(1, "recv", 1, None, b, peer=0, line=5, code=recv,
                      states={"before": "none"})]),
    ]  # fmt: skip
    check_golden("trace-send-without-recv", Trace(reps).text())


def test_trace_cell_without_ops() -> None:
    check_golden("trace-no-ops", Trace([report(r, []) for r in range(2)]).text())


def test_trace_recording_off() -> None:
    off = [report(r, []) | {"enabled": False} for r in range(2)]
    check_golden("trace-recording-off", Trace(off).text())


# -- hang reports (probe states as mxnb.rank.probe_server serves them) -------------


def mirror(ranks: tuple[int, ...], label: str = "world") -> GroupInfo:
    """A group as the rank names it; the communicator is not needed to describe it."""
    return GroupInfo(label, ranks)


def probe_op(
    seq: int,
    name: str,
    code: str,
    *,
    ranks: tuple[int, ...] = (0, 1),
    peer: int | None = None,
    evaluated: bool = False,
    check: str = "ok",
    cell: int = 5,
) -> dict[str, Any]:
    """One op in a probe report (``OpRecord.as_dict``); the line is its call seq."""
    return {
        "seq": seq,
        "op": name,
        "group": mirror(ranks).describe(),
        "group_ranks": ranks,
        "peer": peer,
        "shape": (4,),
        "dtype": "float32",
        "site": f"cell In[{cell}], line {seq + 1}: {code}",
        "evaluated": evaluated,
        "check": check,
    }


def probe_state(
    rank: int,
    ops: list[dict[str, Any]],
    line: str = "",
    waiting: dict[str, Any] | None = None,
    in_eval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A rank's probe report (``ProbeServer.reply``), pid left out."""
    return {
        "rank": rank, "running_cell": bool(line), "checked": True, "ops": ops,
        "waiting": waiting, "in_eval": in_eval, "line": line,
        "unchecked": [o["seq"] for o in ops if o["check"] == "pending"],
    }  # fmt: skip


EVAL_SITE = "cell In[5], line 9: mx.eval(y)"


def waiting_in(rank: int, o: dict[str, Any], since: float) -> dict[str, Any]:
    """A rank blocked in the check of its one op ``o``, saying what it waits for."""
    m = mirror(tuple(o["group_ranks"]))
    peer = None if o["peer"] is None else m.ranks.index(o["peer"])
    said = Meta(o["op"], 1, (4,), "float32").encode()
    check = PendingCheck(o["seq"], o["op"], m, peer, [], [said, b""])
    waiting = {"seq": o["seq"], "op": o["op"], "waits_for": check.describe(), "since": since,
               "site": EVAL_SITE}  # fmt: skip
    return probe_state(rank, [o], EVAL_SITE, waiting=waiting)


def blocked_in(
    rank: int, ops: list[dict[str, Any]], needs: list[int], site: str = EVAL_SITE
) -> dict[str, Any]:
    """A rank inside an evaluation (MPI itself) that needs ops ``needs``."""
    in_eval = {"entry": "mx.eval", "site": site, "since": 90.0, "ops": needs}
    return probe_state(rank, ops, site, in_eval=in_eval)


def running(ranks: list[int], **others: str) -> dict[int, str]:
    """Status per rank: running unless named, e.g. ``running([0, 1], r1="done")``."""
    return {r: others.get(f"r{r}", "running") for r in ranks}


ALL_SUM_OP = probe_op(1, "all_sum", ALL_SUM, check="pending")


def collective_missing() -> str:
    """Ranks 0-2 wait in all_sum; rank 3 skipped it (``if rank != 3:``) and finished."""
    o = probe_op(1, "all_sum", ALL_SUM, ranks=(0, 1, 2, 3), check="pending")
    states = {r: waiting_in(r, o, since=95.0) for r in range(3)} | {3: probe_state(3, [])}
    return diagnose(states, running([0, 1, 2, 3], r3="done"), now=100.0, grace=1.5).text()


def test_hang_collective_skipped_by_a_finished_rank() -> None:
    check_golden("hang-collective-skipped", collective_missing())


def test_hang_collective_called_but_never_evaluated() -> None:
    """Rank 1 called all_sum but never evaluated it (``mx.grad`` of a sum that
    does not need the sum's value) and finished: rank 0 waits in its check."""
    o = probe_op(1, "all_sum", ALL_SUM, check="pending")
    states = {0: waiting_in(0, o, since=95.0), 1: probe_state(1, [o])}
    d = diagnose(states, running([0, 1], r1="done"), now=100.0, grace=1.5)
    check_golden("hang-collective-never-evaluated", d.text())


def test_hang_recv_without_send() -> None:
    recv = probe_op(1, "recv", "y = mx.distributed.recv_like(x, 1)", peer=1, check="pending")
    states = {0: waiting_in(0, recv, since=95.0), 1: probe_state(1, [])}
    d = diagnose(states, running([0, 1], r1="done"), now=100.0, grace=1.5)
    check_golden("hang-recv-without-send", d.text())


def test_hang_send_never_evaluated() -> None:
    recv = probe_op(1, "recv", "y = mx.distributed.recv_like(x, 1)", peer=1, evaluated=True)
    send = probe_op(1, "send", "s = mx.distributed.send(x, 0)", peer=0)
    states = {0: blocked_in(0, [recv], [1]), 1: probe_state(1, [send])}
    d = diagnose(states, running([0, 1], r1="done"), now=100.0, grace=1.5)
    check_golden("hang-send-never-evaluated", d.text())


def test_hang_everyone_waits_in_checks() -> None:
    """Rank 0 calls all_sum while rank 1 waits to receive from it: neither can go on."""
    recv = probe_op(1, "recv", "y = mx.distributed.recv_like(x, 0)", peer=0, check="pending")
    states = {0: waiting_in(0, ALL_SUM_OP, since=90.0), 1: waiting_in(1, recv, since=90.0)}
    d = diagnose(states, running([0, 1]), now=100.0, grace=1.5)
    check_golden("hang-all-wait-in-checks", d.text())


def test_hang_unchecked_ranks_call_different_collectives() -> None:
    """``--no-check``: ranks 0, 2 call all_sum where ranks 1, 3 call all_gather;
    every rank is blocked inside MPI.  Named after a timeout, not before."""
    code = "y = mx.distributed.all_sum(x) if rank % 2 == 0 else mx.distributed.all_gather(x)"
    states = {
        r: blocked_in(r, [probe_op(1, "all_sum" if r % 2 == 0 else "all_gather", code,
                                   ranks=(0, 1, 2, 3), check="off")], [1])
        for r in range(4)
    }  # fmt: skip
    assert diagnose(states, running([0, 1, 2, 3]), now=100.0, grace=1.5).cause is None
    d = diagnose(states, running([0, 1, 2, 3]), now=100.0, grace=0.0, hints=True)
    check_golden("hang-collectives-differ", d.text())


def test_hang_collectives_run_in_different_orders() -> None:
    """Every rank calls a = all_sum (#1) then b = all_sum (#2); rank 3 evaluates b
    first.  MPI paired rank 3's b with the others' a; now rank 0 runs #1, ranks
    1-2 ran both and wait in #2, and rank 3 waits in #2 without having run #1."""
    a = "a = mx.distributed.all_sum(x)"
    b = "b = mx.distributed.all_sum(x * 10)"
    every = (0, 1, 2, 3)

    def ops(ran_a: bool, ran_b: bool) -> list[dict[str, Any]]:
        return [probe_op(1, "all_sum", a, ranks=every, evaluated=ran_a),
                probe_op(2, "all_sum", b, ranks=every, evaluated=ran_b)]  # fmt: skip

    states = {
        0: blocked_in(0, ops(True, False), [1], "cell In[5], line 8: mx.eval(a)"),
        1: blocked_in(1, ops(True, True), [2], "cell In[5], line 9: mx.eval(b)"),
        2: blocked_in(2, ops(True, True), [2], "cell In[5], line 9: mx.eval(b)"),
        3: blocked_in(3, ops(False, True), [2], "cell In[5], line 5: mx.eval(b)"),
    }
    d = diagnose(states, running(list(every)), now=100.0, grace=1.5)
    check_golden("hang-collectives-run-in-different-orders", d.text())
    # as briefly as a rank last to leave a collective stays behind: nothing said
    assert diagnose(states, running(list(every)), now=90.5, grace=1.5).cause is None


def test_hang_collectives_run_in_different_orders_one_rank_finished() -> None:
    """The same on 2 ranks: MPI let rank 0 finish both; rank 1, which ran b
    first, waits in a, which no rank will run with it."""
    a = "a = mx.distributed.all_sum(x)"
    b = "b = mx.distributed.all_sum(x * 10)"
    ops = [probe_op(1, "all_sum", a, evaluated=True), probe_op(2, "all_sum", b, evaluated=True)]
    states = {0: probe_state(0, ops), 1: blocked_in(1, ops, [1], "cell In[5], line 6: mx.eval(a)")}
    d = diagnose(states, running([0, 1], r0="done"), now=100.0, grace=1.5)
    check_golden("hang-collectives-run-in-different-orders-one-finished", d.text())


def test_hang_pairwise_exchange_cycle() -> None:
    """Both ranks evaluate a send to and a recv from each other in one mx.eval."""
    states: dict[int, dict[str, Any] | None] = {}
    for r in (0, 1):
        ops = [
            probe_op(1, "send", f"s = mx.distributed.send(x, {1 - r})", peer=1 - r),
            probe_op(2, "recv", f"y = mx.distributed.recv_like(x, {1 - r})", peer=1 - r),
        ]
        states[r] = blocked_in(r, ops, [1, 2], site="cell In[5], line 4: mx.eval(s, y)")
    d = diagnose(states, running([0, 1]), now=100.0, grace=0.0, hints=True)
    check_golden("hang-exchange-cycle", d.text())


def test_hang_ring_of_four() -> None:
    """The first bug a new user writes: send right, recv from the left, one mx.eval."""
    n, states = 4, {}
    site = "cell In[5], line 6: mx.eval(sent, got)"
    for r in range(n):
        ops = [
            probe_op(1, "send", "sent = mx.distributed.send(x, right)", ranks=(0, 1, 2, 3),
                     peer=(r + 1) % n),
            probe_op(2, "recv", "got = mx.distributed.recv_like(x, left)", ranks=(0, 1, 2, 3),
                     peer=(r - 1) % n),
        ]  # fmt: skip
        states[r] = blocked_in(r, ops, [1, 2], site=site)
    d = diagnose(states, running(list(range(n))), now=100.0, grace=2.0)
    check_golden("hang-ring-of-four", d.text())


def test_hang_rank_not_answering() -> None:
    states = {0: waiting_in(0, ALL_SUM_OP, since=99.0), 1: None}
    d = diagnose(states, running([0, 1]), now=100.0, grace=0.0, hints=True)
    check_golden("hang-not-answering", d.text())


def test_hang_peer_raised() -> None:
    send = probe_op(1, "send", "s = mx.distributed.send(x, 1)", peer=1, check="pending")
    states = {0: waiting_in(0, send, since=95.0), 1: None}
    d = diagnose(states, running([0, 1], r1="failed"), now=100.0, grace=1.5)
    check_golden("hang-peer-raised", d.text())


def test_hang_recv_from_itself() -> None:
    """``recv(..., src=rank)``: rank 0 waits for a message only it could send."""
    recv = probe_op(1, "recv", "x = mx.distributed.recv((4,), mx.float32, src=rank)", peer=0,
                    check="pending")  # fmt: skip
    states = {0: waiting_in(0, recv, since=95.0), 1: probe_state(1, [])}
    d = diagnose(states, running([0, 1], r1="done"), now=100.0, grace=1.5)
    check_golden("hang-recv-from-itself", d.text())
    # with a send to itself (on another stream) it could be both ends: not said
    send = probe_op(2, "send", "s = mx.distributed.send(x, rank)", peer=0, check="pending")
    states[0]["ops"].append(send)
    d = diagnose(states, running([0, 1], r1="done"), now=100.0, grace=1.5)
    assert "itself" not in (d.cause or "")


# -- errors by rank ----------------------------------------------------------

RED, GREEN, RESET = "\x1b[0;31m", "\x1b[0;32m", "\x1b[0m"


def ipython_traceback(ename: str, evalue: str, cell: int, line: int, code: str) -> list[str]:
    """A rank's traceback as ipyparallel hands it over: IPython's coloured lines."""
    return [
        f"{RED}{'-' * 75}{RESET}",
        f"{RED}{ename}{RESET}{' ' * (42 - len(ename))}Traceback (most recent call last)",
        f"Cell {GREEN}In[{cell}], line {line}{RESET}\n{GREEN}----> {line}{RESET} {code}\n",
        f"{RED}{ename}{RESET}: {evalue}",
    ]


def error(ename: str, evalue: str, line: int = 2, code: str = "") -> dict[str, Any]:
    return {
        "ename": ename,
        "evalue": evalue,
        "traceback": ipython_traceback(ename, evalue, 4, line, code),
    }


def rendered(err: RankError) -> str:
    """What IPython prints for the exception: its ``_render_traceback_`` lines."""
    return "\n".join(err._render_traceback_())


def check_error(name: str, err: RankError) -> None:
    check_golden(name, rendered(err))
    check_golden(f"{name}-str", str(err))


def test_error_one_rank() -> None:
    outcomes = [RankOutcome(r, done=True) for r in range(4)]
    outcomes[2].error = error("ZeroDivisionError", "division by zero", 2, "print(1 / (rank - 2))")
    check_error("error-one-rank", RankError(CellResult(outcomes)))


def test_error_same_on_ranks_0_to_3() -> None:
    err = error("NameError", "name 'wrold' is not defined", 1, "print(wrold.size())")
    result = CellResult([RankOutcome(r, done=True, error=dict(err)) for r in range(4)])
    check_error("error-same-on-all", RankError(result))


def test_error_two_different_errors() -> None:
    outcomes = [RankOutcome(r, done=True) for r in range(4)]
    for r in (0, 1):
        outcomes[r].error = error("KeyError", "'weights'", 3, "w = params['weights']")
    code = "raise ValueError(f'rank {rank} has no data')"
    outcomes[3].error = error("ValueError", "rank 3 has no data", 2, code)
    check_error("error-two-errors", RankError(CellResult(outcomes)))


DIED = {"ename": "EngineError", "evalue": "the rank's process died", "traceback": []}


def test_error_timeout_with_report() -> None:
    """--timeout 3: rank 1 still sleeps; it is interrupted and the cluster kept."""
    states = {r: probe_state(r, []) for r in range(4)}
    states[1] = probe_state(1, [], line="cell In[7], line 3: time.sleep(60)")
    status = running([0, 1, 2, 3], r0="done", r2="done", r3="done")
    rep = diagnose(states, status, now=100.0, grace=0.0, hints=True).text()
    outcomes = [RankOutcome(r, done=True) for r in range(4)]
    outcomes[1].error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []}
    # settle()'s note when every interrupted rank stopped (mxnb/recovery.py)
    note = "rank 1 was interrupted; the cluster is ready for the next cell (variables kept)."
    headline = HEADLINES["timeout"] + " after 3 s"
    err = RankError(CellResult(outcomes, timed_out=True), note=note, report=rep, headline=headline)
    check_error("error-timeout", err)


def test_error_stall_stops_the_job() -> None:
    """mxnb saw the skipped collective itself; ranks blocked in MPI ignore the interrupt."""
    outcomes = [RankOutcome(r, done=True, error=dict(DIED)) for r in range(3)]
    outcomes.append(RankOutcome(3, done=True))
    # settle()'s note when ranks did not respond to SIGINT (mxnb/recovery.py)
    note = (
        "ranks 0-2 did not respond to an interrupt (blocked inside an MPI call), so the MPI job "
        "was stopped. The next %%mxdist cell starts fresh ranks (variables on the ranks are lost)."
    )
    err = RankError(
        CellResult(outcomes), note=note, report=collective_missing(), headline=HEADLINES["stall"]
    )
    check_error("error-stall", err)


#: The line a relay that could not bind its port leaves in the controller's log.
RELAY_LOG = """\
2026-11-30 06:42:02.630 [IPController] task::using Python leastload Task scheduler
Process Process-6:
Traceback (most recent call last):
  File "zmq/backend/cython/_zmq.py", line 190, in zmq.backend.cython._zmq._check_rc
zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:42547')
2026-11-30 06:42:02.660 [task] Task scheduler started [leastload]
"""


def test_error_lost_answers(tmp_path: Path) -> None:
    """Ranks 0-2 finished but their output never came; rank 3 never answered."""
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "ipcontroller-1-y0rf-3779.log").write_text(RELAY_LOG)
    report = lost_report({0: "output", 1: "output", 2: "output", 3: "reply"}, str(tmp_path))
    # settle()'s note after lost answers (mxnb/recovery.py)
    note = "The next %%mxdist cell starts fresh ranks (variables on the ranks are lost)."
    outcomes = [RankOutcome(r) for r in range(4)]
    err = RankError(CellResult(outcomes), note=note, report=report, headline=HEADLINES["lost"])
    check_error("error-lost", err)


def test_start_again_after_a_relay_ended(tmp_path: Path) -> None:
    """What the magic prints when its first start found a relay of the controller
    gone (here known from the log alone: a real process stands for the controller)."""
    (tmp_path / "log").mkdir()
    log = tmp_path / "log" / "ipcontroller-1-y0rf-3779.log"
    controller = subprocess.Popen(["sleep", "30"])
    try:
        check_relays(controller.pid, str(tmp_path))  # nothing ended: no error
        log.write_text(RELAY_LOG)
        with pytest.raises(RelayLost) as lost:
            check_relays(controller.pid, str(tmp_path))
    finally:
        controller.kill()
        controller.wait()
    # as MxdistSession.ensure_cluster prints it (mxnb/kernel/session.py)
    check_golden("start-again-relay-ended", f"mxdist: started twice: the first time, {lost.value}")


#: MLX 0.32's message when the C++ it meant to write for a compiled function is missing.
UNWRITTEN = (
    "[Compile::eval_cpu] Failed to compile function Bf4IBroadcastACf4ONegativeB_V_f4_61425091"
    '_strided_1: Failed to execute command with return code 1: "g++ -std=c++17 -O3 -Wall '
    '-fPIC -shared -I "/opt/venv/lib/python3.11/site-packages/mlx/include" '
    '"{cache}/tmp_0c3e4d90.cpp" -o "{cache}/tmp_0c3e4d90.so" 2>&1", the output is: '
    "cc1plus: fatal error: {cache}/tmp_0c3e4d90.cpp: No such file or directory\n"
    "compilation terminated."
)


@pytest.mark.parametrize("case", ["owned", "elsewhere"])
def test_error_compile_cache_of_another_user(case: str) -> None:
    """Every rank's mx.compile failed: MLX's cache under /tmp is the teacher's
    (the real check, as a non-root user: tests/kernel/test_causes.py)."""
    evalue = UNWRITTEN.format(cache="/tmp/mlx/0.32.4/cpu")
    outcomes = [RankOutcome(r, done=True) for r in range(4)]
    for o in outcomes:
        o.error = error("RuntimeError", evalue, 19, "    mx.eval(state)")
    cause = compile_cache_cause(evalue, here=case == "owned", owner_of=lambda _: "teacher")
    err = RankError(CellResult(outcomes), report=f"Likely cause: {cause}")
    check_error(f"error-compile-cache-{case}", err)


SIGNAL_OUTPUT = """\
[rank 1] about to crash
--------------------------------------------------------------------------
prterun noticed that process rank 1 with PID 48213 on node vm exited on
signal 9 (Killed).
--------------------------------------------------------------------------"""

EXIT_OUTPUT = """\
Traceback (most recent call last):
  File "<string>", line 1, in <module>
SystemExit: 3
--------------------------------------------------------------------------
prterun detected that one or more processes exited with non-zero status,
thus causing the job to be terminated. The first process to do so was:

   Process name: [prterun-vm-48190@1,3]
   Exit code:    3
--------------------------------------------------------------------------"""


def test_error_crash() -> None:
    """Rank 1 was killed; the others never finished the cell before the job ended."""
    outcomes = [RankOutcome(r) for r in range(4)]
    outcomes[1] = RankOutcome(1, done=True, error=dict(DIED))
    # settle()'s note after a crash (mxnb/recovery.py)
    note = "The next %%mxdist cell starts fresh ranks (variables on the ranks are lost)."
    report = crash_report(SIGNAL_OUTPUT)
    err = RankError(CellResult(outcomes), note=note, report=report, headline=HEADLINES["crash"])
    check_error("error-crash", err)


FAULT_CELL = """\
# In[5]: %%mxdist
a = mx.distributed.all_sum(mx.ones(1 << 20))
b = mx.distributed.all_sum(mx.ones(1 << 21))
if rank == 1:
    mx.eval(b)
    mx.eval(a)"""

#: What faulthandler wrote to rank 1's fault file (two of its threads kept).
FAULT_FILE = """\
Fatal Python error: Aborted

Thread 0x00007f1a2b3c46c0 (most recent call first):
  File "/usr/lib/python3.11/socket.py", line 294 in accept
  File "/opt/mxnb/mxnb/rank/probe_server.py", line 118 in _serve

Current thread 0x00007f1a2f5e8b80 (most recent call first):
  File "/opt/mxnb/mxnb/rank/entries.py", line 126 in entry
  File "/tmp/ipykernel_4242/2888184429.py", line 6 in <module>
  File "/usr/lib/python3/site-packages/IPython/core/interactiveshell.py", line 3823 in run_code
"""

ABORT_OUTPUT = """\
double free or corruption (!prev)
--------------------------------------------------------------------------
prterun noticed that process rank 1 with PID 4242 on node vm exited on
signal 6 (Aborted).
--------------------------------------------------------------------------
[vm:4242] """


def test_recovery_rank_died_evaluating() -> None:
    """Rank 1 ran b before a: MPI paired b with rank 0's a, wrote past a buffer
    and rank 1 died in mx.eval(a); its fault file says where."""
    check_golden("recovery-died-evaluating",
                 crash_report(ABORT_OUTPUT, FAULT_CELL, faults={1: FAULT_FILE}))  # fmt: skip


def test_recovery_killed_by_signal() -> None:
    check_golden("recovery-signal", crash_report(SIGNAL_OUTPUT))


def test_recovery_exit_code() -> None:
    check_golden("recovery-exit-code", crash_report(EXIT_OUTPUT))


#: What two ranks and mpiexec wrote as the ranks gave up on their controller's heartbeat.
HEARTBEAT_OUTPUT = """\
2026-12-01 01:21:14.402 [IPEngine] WARNING | No heartbeat in the last 600 ms (50 time(s) in a row).
2026-12-01 01:21:14.402 [IPEngine] CRITICAL | Maximum number of heartbeats misses reached \
(50 times 600 ms), shutting down.
--------------------------------------------------------------------------
prterun detected that one or more processes exited with non-zero status,
thus causing the job to be terminated. The first process to do so was:

   Process name: [prterun-vm-28232@1,1]
   Exit code:    1
--------------------------------------------------------------------------"""


@pytest.mark.parametrize("case", ["signal", "heartbeat", "silent"])
def test_recovery_between_cells(case: str) -> None:
    """Ranks that ended while no cell ran, as the next cell prints it before it
    starts fresh ones (MxdistSession.ensure_cluster): killed; shut down for want
    of the controller's heartbeat; ended with nothing said."""
    output = {"signal": SIGNAL_OUTPUT, "heartbeat": HEARTBEAT_OUTPUT, "silent": ""}[case]
    check_golden(f"recovery-between-cells-{case}", f"mxdist: {between_cells(output, 4)}")


# -- results ------------------------------------------------------------------


def test_results_by_rank() -> None:
    matrix = "array([[0., 1.],\n       [2., 3.]], dtype=float32)"
    res = RankResults(
        [
            RankOutcome(0, result={"text/plain": "array([0, 4, 8], dtype=int32)"}, done=True),
            RankOutcome(1, result=None, done=True),
            RankOutcome(2, result={"text/plain": matrix}, done=True),
            RankOutcome(3, result={"text/plain": "'rank 3 of 4'"}, done=True),
        ]
    )
    check_golden("results-by-rank", res.text())


def test_cost_of_a_loop_of_small_ops() -> None:
    said = [cost_note(20_000, checked, recorded, path) for path in ("c", "python", "python-only")
            for checked in (True, False) for recorded in (True, False)]  # fmt: skip
    check_golden("note-op-cost", "\n".join(said))


# -- %mxdist status -----------------------------------------------------------


def test_status_running() -> None:
    lib = OpenMPI(
        prefix=Path("/opt/venv"),
        mpiexec=Path("/opt/venv/bin/mpiexec"),
        libmpi=Path("/opt/venv/lib/python3.11/site-packages/openmpi/lib/libmpi.so.40"),
        version="mpiexec (Open MPI) 5.0.8",
    )
    status = ClusterStatus(
        running=True,
        n=4,
        mpi_library=lib.describe(),
        mlx_version="0.30.1",
        hosts=("vm", "vm", "vm", "vm"),
        uptime=125.4,
        profile_dir="/tmp/mxnb-k3j9x2",
    )
    check_golden("status-running", str(status))


def test_status_on_several_hosts() -> None:
    status = ClusterStatus(
        running=True,
        n=6,
        mpi_library="mpiexec (Open MPI) 5.0.8 (/opt/venv/lib/libmpi.so.40)",
        mlx_version="0.30.1",
        hosts=("node1", "node1", "node1", "node2", "node2", "node3"),
        placed_by="hostfile /home/ada/hosts",
        uptime=12.0,
        profile_dir="/tmp/mxnb-k3j9x2",
    )
    check_golden("status-hosts", str(status))


#: What Open MPI prints when a remote daemon cannot start (shortened, as 5.0 words it).
_DAEMON_FAILED = (
    "{before}\n------------------------------------------------------------\n"
    "A daemon failed to report back after being spawned.\n"
    "  Local host:    vm\n  Remote host:   {host}\n  Daemon exit status: {code}\n"
    "------------------------------------------------------------\n"
)


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("unreachable", _DAEMON_FAILED.format(
            before="ssh: connect to host node7 port 22: Connection timed out",
            host="node7", code=255)),
        ("no-environment", _DAEMON_FAILED.format(
            before="bash: line 1: /opt/venv/bin/prted: No such file or directory",
            host="node2", code=127)),
        ("rank-cannot-reach-kernel", "mxnb rank 3 on host node2: cannot reach the kernel's "
         "controller at 10.1.0.1:40111 (Network is unreachable); start the ranks with --ip "
         "set to an address of the kernel's host that every host reaches\n"),
        ("other-daemon-failure", _DAEMON_FAILED.format(before="", host="node2", code=1)),
    ],
)  # fmt: skip
def test_start_failures_name_the_host(name: str, output: str, monkeypatch) -> None:
    from mxnb.kernel.startfail import start_failure

    monkeypatch.setattr(sys, "prefix", "/opt/venv")
    monkeypatch.setattr(sys, "executable", "/opt/venv/bin/python")
    said = start_failure(output)
    assert said is not None
    check_golden(f"start-failure-{name}", said)


def test_status_not_running() -> None:
    check_golden("status-not-running", str(ClusterStatus(running=False, n=0)))


# -- the magic: help and usage errors -----------------------------------------


def test_magic_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``%mxdist?`` shows.

    IPython's ``magic_arguments`` replaces the function's docstring with the
    parser's help at import time, wrapped to the terminal width then; the same
    parser formats it again here at a fixed width (argparse reads COLUMNS).
    argparse's layout is Python's own, so a new Python version may rewrap
    this file: regenerate it then, checking that only layout changed.
    """
    monkeypatch.setenv("COLUMNS", "100")
    check_golden("magic-help", MxdistMagics.mxdist.parser.format_help())


def test_magic_help_is_the_docstring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden help is what IPython shows: the docstring has the same text, up to wrapping."""
    monkeypatch.setenv("COLUMNS", "100")
    help_text = MxdistMagics.mxdist.parser.format_help()
    doc = MxdistMagics.mxdist.__doc__ or ""
    assert doc.split() == help_text.split()


@pytest.mark.parametrize(
    ("case", "spec"),
    [("bad-spec", "1;3"), ("out-of-range", "2-5"), ("empty-range", "3-1")],
)
def test_magic_targets_errors(case: str, spec: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_targets(spec, 4)
    check_golden(f"magic-targets-{case}", str(e.value))


@pytest.mark.parametrize(
    ("case", "line"),
    [
        ("np-zero", "-n 0"),
        ("np-word", "-n four"),
        ("timeout", "--timeout soon"),
        ("unknown-option", "--ranks 4"),
    ],
)
def test_magic_argument_errors(case: str, line: str) -> None:
    with pytest.raises(UsageError) as e:
        MxdistMagics.mxdist.parser.parse_argstring(line)
    check_golden(f"magic-args-{case}", str(e.value))


# -- checked mode: what ranks raise before data moves -------------------------
# CommMismatch is raised on the ranks, from a completed metadata exchange; its
# message needs only each side's Meta and the group's GroupInfo, so the private
# builders are called directly instead of starting ranks that disagree.


def problem(text: str | None) -> str:
    assert text is not None, "these inputs disagree: a message was expected"
    return text


class _Comm:
    """Just enough of an MPI communicator for the messages: this rank's number."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def Get_rank(self) -> int:
        return self.rank


def test_check_collective_mismatch() -> None:
    metas = [Meta("all_sum", 1, (4,), "float32")] * 3 + [Meta("all_gather", 1, (4,), "float32")]
    text = _collective_problem(metas, mirror((0, 1, 2, 3)))
    check_golden("check-collective-mismatch", problem(text))


def test_check_collective_shapes_differ() -> None:
    metas = [Meta("all_sum", 1, (4,), "float32")] * 3 + [Meta("all_sum", 1, (4,), "int32")]
    text = _collective_problem(metas, mirror((0, 1, 2, 3)))
    check_golden("check-collective-dtype", problem(text))


def test_check_send_recv_mismatch() -> None:
    m = GroupInfo("world", (0, 1), _comm=_Comm(1))
    text = _p2p_problem(
        "recv", Meta("recv", 1, (4,), "int32"), Meta("send", 1, (4,), "float32"), m, 0
    )
    check_golden("check-send-recv-mismatch", problem(text))


def test_check_split_group_send_recv_mismatch() -> None:
    m = GroupInfo("split #1 color 1", (1, 3), _comm=_Comm(0))
    text = _p2p_problem(
        "send", Meta("send", 1, (2, 2), "float32"), Meta("recv", 1, (4,), "float32"), m, 1
    )
    check_golden("check-send-recv-mismatch-split", problem(text))


def test_check_two_recvs_in_one_eval() -> None:
    """Rank 1: ``a, b = recv(...), recv(...)`` from rank 0, then ``mx.eval(a, b)``."""
    m = GroupInfo("world", (0, 1))
    recs = [OpRecord(seq, "recv", m, 0, (4,), "float32", None) for seq in (1, 2)]
    check_golden("check-two-recvs-in-one-eval", order_problem(recs))


def test_check_bool_reduction() -> None:
    with pytest.raises(UnsupportedReduction) as info:
        bool_trap("all_sum", "bool")
    check_golden("check-bool-all-sum", problem(str(info.value)))


@pytest.mark.parametrize(
    ("case", "backend", "op", "rank", "peer", "size"),
    [
        ("backend-ring-split", "ring", "split", 0, None, 4),
        ("backend-ring-send-far", "ring", "send", 0, 2, 4),
        ("backend-ring-recv-self", "ring", "recv", 1, 1, 2),
        ("backend-mpi-sum-scatter", "mpi", "sum_scatter", 0, None, 4),
    ],
)
def test_backend_refusals(
    case: str, backend: str, op: str, rank: int, peer: int | None, size: int
) -> None:
    with pytest.raises(BackendUnsupported) as info:
        refuse(op, rank, peer, size, backend=backend)
    check_golden(case, problem(str(info.value)))


def test_what_a_backend_can_do_passes_without_a_word() -> None:
    refuse("send", 0, 1, 4, backend="ring")  # a neighbour
    refuse("recv", 0, 3, 4, backend="ring")  # the other neighbour
    refuse("split", backend="mpi")
    refuse("send", 0, 2, 4, backend="mpi")
