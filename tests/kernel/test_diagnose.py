"""The hang explanations, rule by rule, from synthetic rank reports."""

from __future__ import annotations

import pytest

from mxnb.kernel.diagnose import diagnose
from mxnb.kernel.waitfor import cycles
from mxnb.protocol.wording import ranks_text

WORLD = "world (ranks 0, 1)"


def op(seq, name, peer=None, evaluated=False, check="ok", group=WORLD, ranks=(0, 1)):
    return {
        "seq": seq, "op": name, "group": group, "group_ranks": list(ranks), "peer": peer,
        "shape": [4], "dtype": "float32", "site": f"cell In[3], line {seq}: ...",
        "evaluated": evaluated, "check": check,
    }  # fmt: skip


def waiting_in(o, since=0.0):
    return {"ops": [o], "waiting": {"seq": o["seq"], "op": o["op"], "waits_for": "peers",
            "since": since, "site": "x"}, "in_eval": None, "line": ""}  # fmt: skip


def blocked_in(ops, needs, line="cell In[3], line 9: print(r)"):
    return {"ops": ops, "waiting": None, "line": line,
            "in_eval": {"entry": "mx.eval", "site": line, "since": 0, "ops": needs}}  # fmt: skip


def finished(ops):
    return {"ops": ops, "waiting": None, "in_eval": None, "line": ""}


def test_unevaluated_send():
    states = {
        0: blocked_in([op(1, "recv", peer=1, evaluated=True)], [1]),
        1: finished([op(1, "send", peer=0)]),
    }
    d = diagnose(states, {0: "running", 1: "done"}, now=100)
    assert d.cause == "rank 1 finished the cell without evaluating its send #1 to rank 0."
    assert d.lines[0].startswith("rank 0: blocked in mx.eval at cell In[3], line 9")
    assert d.lines[1] == (
        "rank 1: finished the cell; never evaluated: send #1 to rank 0 of float32[4]"
    )
    assert d.stuck == [0]


def test_recv_without_any_send():
    states = {0: waiting_in(op(2, "recv", peer=1, check="pending")), 1: finished([])}
    d = diagnose(states, {0: "running", 1: "done"}, now=100)
    assert d.cause == (
        "rank 0 waits in recv #2 from rank 1, but rank 1 finished the cell without "
        "sending to rank 0."
    )


def test_send_without_recv_on_a_failed_peer():
    states = {0: waiting_in(op(1, "send", peer=1, check="pending")), 1: None}
    d = diagnose(states, {0: "running", 1: "failed"}, now=100)
    assert d.cause == (
        "rank 0 waits in send #1 to rank 1, but rank 1 raised an exception without a "
        "recv from rank 0."
    )
    assert d.lines[1] == "rank 1: raised an exception (traceback above)"


def _rank_2_skips_an_all_sum() -> tuple[dict, dict]:
    """Ranks 0 and 1 wait in all_sum #1 of three ranks; rank 2 finished without it."""
    ranks, g = (0, 1, 2), "world (ranks 0-2)"
    states = {
        0: waiting_in(op(1, "all_sum", check="pending", group=g, ranks=ranks)),
        1: waiting_in(op(1, "all_sum", check="pending", group=g, ranks=ranks)),
        2: finished([]),
    }
    return states, {0: "running", 1: "running", 2: "done"}


def test_collective_missing_on_finished_rank():
    d = diagnose(*_rank_2_skips_an_all_sum(), now=100)
    assert d.cause == (
        "rank 2 finished the cell without calling all_sum (collective #1 on world "
        "(ranks 0-2)) that rank 0 waits in; every rank of a group must reach each collective."
    )


def test_ranks_on_several_hosts_say_where_they_run():
    states, status = _rank_2_skips_an_all_sum()
    hosts = {0: "node1", 1: "node1", 2: "node2"}
    d = diagnose(states, status, now=100, hosts=hosts)
    assert d.lines[0].startswith("rank 0 on node1: waiting for peers in all_sum #1")
    assert d.lines[2] == "rank 2 on node2: finished the cell"
    assert d.cause is not None and d.cause.startswith("rank 2 finished the cell")
    assert diagnose(states, status, now=100).lines[2] == "rank 2: finished the cell"


def test_collective_that_the_finished_rank_did_call_is_not_blamed():
    """A rank still computing after a completed all_sum is not a hang."""
    states = {
        0: blocked_in([op(1, "all_sum")], [1]),
        1: finished([op(1, "all_sum", evaluated=True)]),
    }
    d = diagnose(states, {0: "running", 1: "done"}, now=100)
    assert d.cause is None


def test_everyone_waiting_in_checks_is_a_deadlock_after_the_grace():
    states = {
        0: waiting_in(op(1, "recv", peer=1, check="pending"), since=99.5),
        1: waiting_in(op(1, "recv", peer=0, check="pending"), since=99.5),
    }
    assert diagnose(states, {0: "running", 1: "running"}, now=100, grace=2).cause is None
    d = diagnose(states, {0: "running", 1: "running"}, now=102, grace=2)
    assert d.cause is not None and d.cause.startswith("the ranks wait for each other")


def test_python_code_is_not_a_hang():
    states = {0: {"ops": [], "waiting": None, "in_eval": None, "line": "cell In[1], line 2"}}
    d = diagnose(states, {0: "running", 1: "done"}, now=100)
    assert d.cause is None
    assert d.lines[0] == "rank 0: running cell In[1], line 2"
    assert d.lines[1] == "rank 1: not answering (its process may be gone)"


def ring(n, members=None, stream="default stream", since=0.0):
    """Each member sends right and receives from the left in one mx.eval."""
    members = list(range(n)) if members is None else members
    states = {}
    for i, r in enumerate(members):
        right, left = members[(i + 1) % len(members)], members[i - 1]
        ops = [
            op(1, "send", peer=right, ranks=range(n)),
            op(2, "recv", peer=left, ranks=range(n)),
        ]
        ops[0]["stream"], ops[1]["stream"] = "default stream", stream
        states[r] = blocked_in(ops, [1, 2])
        states[r]["in_eval"]["since"] = since
    return states


@pytest.mark.parametrize("n", [2, 4])
def test_same_stream_ring_is_a_cycle_naming_every_rank(n):
    d = diagnose(ring(n, since=97.0), {r: "running" for r in range(n)}, now=100, grace=2.0)
    assert d.cause is not None
    assert d.cause.startswith(f"{ranks_text(range(n))} wait on each other in a cycle: each ")
    assert "stream=mx.new_stream(mx.cpu)" in d.cause
    assert sorted(d.stuck) == list(range(n))
    for r in range(n):
        assert f"send #1 to rank {(r + 1) % n} of float32[4], called at" in d.lines[r]
        assert f"recv #2 from rank {(r - 1) % n} of float32[4], called at" in d.lines[r]


def test_a_cycle_of_three_inside_four_ranks():
    states = ring(4, members=[0, 1, 3], since=97.0)
    states[2] = finished([])
    status = {0: "running", 1: "running", 2: "done", 3: "running"}
    cause = diagnose(states, status, now=100, grace=2.0).cause
    assert cause is not None and cause.startswith("ranks 0, 1, 3 wait on each other in a cycle")


def test_a_cycle_only_counts_after_the_grace_and_the_transfer_time():
    status = {0: "running", 1: "running"}
    assert diagnose(ring(2, since=99.0), status, now=100, grace=2.0).cause is None
    # the stop button or a timeout: the user gave up waiting, no grace
    assert diagnose(ring(2, since=99.0), status, now=100, grace=0.0, hints=True).cause
    big = ring(2, since=90.0)
    for s in big.values():
        for o in s["ops"]:
            o["shape"] = [250_000_000]  # 1 GB each way: may take seconds at a slow link
    assert diagnose(big, status, now=100, grace=2.0).cause is None
    assert diagnose(big, status, now=200, grace=2.0).cause is not None


def test_two_pairs_are_named_together_once():
    states = {r: blocked_in([op(1, "send", peer=r ^ 1, ranks=range(4)),
                             op(2, "recv", peer=r ^ 1, ranks=range(4))], [1, 2])
              for r in range(4)}  # fmt: skip
    cause = diagnose(states, {r: "running" for r in range(4)}, now=100, grace=2.0).cause
    assert cause is not None
    assert cause.startswith("ranks 0, 1 and ranks 2, 3 wait on each other in cycles: each ")
    assert cause.count("Give each recv its own stream") == 1


def test_recv_on_its_own_stream_is_not_a_cycle():
    """Correct code moving a lot of data looks blocked but shows no reason to be."""
    states = ring(4, stream="Stream(Device(cpu, 0), 1)", since=0.0)
    assert diagnose(states, {r: "running" for r in range(4)}, now=100, grace=2.0).cause is None


def test_recvs_first_in_separate_evaluations_is_a_cycle():
    """Both ranks evaluate their recv before their send: each waits in a recv."""
    states = {r: blocked_in([op(1, "send", peer=1 - r), op(2, "recv", peer=1 - r)], [2])
              for r in (0, 1)}  # fmt: skip
    cause = diagnose(states, {0: "running", 1: "running"}, now=100, grace=2.0).cause
    assert cause is not None
    assert cause.startswith("ranks 0, 1 wait on each other in a cycle: rank 0 waits in recv #2")
    assert "rank 1's running evaluation holds no send to rank 0" in cause
    assert "Evaluate each send before a recv that waits on it" in cause


def test_cycles_are_strongly_connected_groups():
    assert cycles({0: {1}, 1: {2}, 2: {0}, 3: {0}}) == [[0, 1, 2]]
    assert cycles({0: {1}, 1: set()}) == []
    assert cycles({0: {1}, 1: {0}, 2: {3}, 3: {2}}) == [[0, 1], [2, 3]]


def test_a_pair_a_moment_behind_is_waited_for_so_one_report_names_both():
    """Under load ranks 2, 3 enter their exchange later: report once both are stuck."""
    states = {r: blocked_in([op(1, "send", peer=r ^ 1, ranks=range(4)),
                             op(2, "recv", peer=r ^ 1, ranks=range(4))], [1, 2])
              for r in range(4)}  # fmt: skip
    for r in (2, 3):
        states[r]["in_eval"]["since"] = 99.5  # blocked half a second ago
    status = {r: "running" for r in range(4)}
    assert diagnose(states, status, now=100, grace=2.0).cause is None
    cause = diagnose(states, status, now=102, grace=2.0).cause
    assert cause is not None and cause.startswith("ranks 0, 1 and ranks 2, 3 wait on each other")
