"""The hang explanations, rule by rule, from synthetic rank reports."""

from __future__ import annotations

from mxnb.kernel.diagnose import diagnose

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


def test_collective_missing_on_finished_rank():
    ranks = (0, 1, 2)
    g = "world (ranks 0-2)"
    states = {
        0: waiting_in(op(1, "all_sum", check="pending", group=g, ranks=ranks)),
        1: waiting_in(op(1, "all_sum", check="pending", group=g, ranks=ranks)),
        2: finished([]),
    }
    d = diagnose(states, {0: "running", 1: "running", 2: "done"}, now=100)
    assert d.cause == (
        "rank 2 finished the cell without calling all_sum (collective #1 on world "
        "(ranks 0-2)) that rank 0 waits in; every rank of a group must reach each collective."
    )


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


def test_same_stream_exchange_is_a_hint_only_after_the_user_gave_up():
    states = {
        r: blocked_in([op(1, "send", peer=1 - r), op(2, "recv", peer=1 - r)], [1, 2])
        for r in (0, 1)
    }
    status = {0: "running", 1: "running"}
    assert diagnose(states, status, now=100).cause is None
    cause = diagnose(states, status, now=100, hints=True).cause
    assert cause is not None
    assert cause.startswith("ranks 0 and 1 each evaluate a send to the other")
    assert "stream=mx.new_stream(mx.cpu)" in cause


def test_checks_out_of_step_after_an_unevaluated_send():
    states = {
        0: blocked_in([op(1, "recv", peer=1, evaluated=True, check="ok")], [1]),
        1: waiting_in(op(2, "send", peer=0, check="pending")),
    }
    d = diagnose(states, {0: "running", 1: "running"}, now=100)
    assert d.cause is not None
    assert d.cause.startswith("rank 1's check of send #2 is out of step with rank 0's recv #1")
