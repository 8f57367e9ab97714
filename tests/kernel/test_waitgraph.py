"""Who waits for whom, from hand-made probe answers (the live strip's and hang picture's model)."""

from __future__ import annotations

import numpy as np

from mxnb.kernel import live
from mxnb.kernel.waitgraph import wait_graph
from mxnb.views.palette import STATES, rank_color
from mxnb.views.waits import render_waits

NOW = 1000.0


def op(seq: int, name: str, peer: int | None, group_ranks=(0, 1, 2, 3)) -> dict:
    return {
        "seq": seq, "op": name, "group": "world", "group_ranks": tuple(group_ranks),
        "peer": peer, "shape": (4,), "dtype": "float32", "site": f"line {seq + 1}",
        "evaluated": True, "check": "ok", "stream": "default stream",
    }  # fmt: skip


def in_eval(ops: list[dict], since: float = NOW - 3) -> dict:
    ev = {"entry": "mx.eval", "site": "line 4", "since": since, "ops": [o["seq"] for o in ops]}
    return {"ops": ops, "waiting": None, "line": "line 4", "in_eval": ev}


def test_a_ring_exchange_on_one_stream_is_one_cycle():
    states = {
        r: in_eval([op(1, "send", (r + 1) % 4), op(2, "recv", (r - 1) % 4)]) for r in range(4)
    }
    g = wait_graph(states, dict.fromkeys(range(4), "running"), NOW)
    assert g.cycles == [[0, 1, 2, 3]] and g.missing == []
    assert g.ranks[0].waits_on == (1, 3) and g.ranks[0].seconds == 3.0
    assert g.ranks[0].text() == (
        "rank 0: waits on ranks 1, 3 in send #1 to rank 1 of float32[4] (3.0 s), at line 2"
    )


def test_a_recv_from_a_rank_that_finished_waits_on_a_missing_peer():
    waiting = {"seq": 1, "op": "recv", "waits_for": "rank 1 to send", "since": NOW - 2.5,
               "site": "line 2"}  # fmt: skip
    states = {0: {"ops": [op(1, "recv", 1)], "waiting": waiting, "in_eval": None}, 1: None}
    g = wait_graph(states, {0: "running", 1: "done"}, NOW)
    assert g.missing == [1] and g.cycles == []
    assert g.ranks[1].text() == "rank 1: finished the cell"
    assert "waited on, but finished or failed: rank 1" in g.text()


def test_a_collective_waits_on_the_members_not_there_yet():
    waiting = {"seq": 1, "op": "all_sum", "waits_for": "ranks 2, 3", "since": NOW - 1,
               "site": "line 2"}  # fmt: skip
    here = {"ops": [op(1, "all_sum", None)], "waiting": waiting, "in_eval": None}
    busy = {"ops": [], "waiting": None, "in_eval": None, "line": "line 7: time.sleep(5)"}
    states = {0: here, 1: here, 2: busy, 3: busy}
    g = wait_graph(states, dict.fromkeys(range(4), "running"), NOW)
    assert [r.waits_on for r in g.ranks] == [(2, 3), (2, 3), (), ()]
    assert g.ranks[2].text() == "rank 2: computing, at line 7: time.sleep(5)"
    assert g.cycles == []


def test_collectives_run_in_different_orders_wait_on_each_other():
    """Every rank called a (#1) then b (#2); rank 3 evaluates b first.  Rank 0 is
    in a, waiting on rank 3, which never ran a; rank 3 and ranks 1, 2 (which ran
    a) are in b, waiting on rank 0: a cycle of ranks 0 and 3, not four ranks
    "in all_sum" together."""

    def blocked(ran_a: bool, ran_b: bool, seq: int) -> dict:
        a, b = op(1, "all_sum", None), op(2, "all_sum", None)
        a["evaluated"], b["evaluated"] = ran_a, ran_b
        state = in_eval([a, b])
        state["in_eval"]["ops"] = [seq]
        return state

    states = {0: blocked(True, False, 1), 1: blocked(True, True, 2),
              2: blocked(True, True, 2), 3: blocked(False, True, 2)}  # fmt: skip
    g = wait_graph(states, dict.fromkeys(range(4), "running"), NOW)
    assert [r.waits_on for r in g.ranks] == [(3,), (0,), (0,), (0,)]
    assert g.cycles == [[0, 3]]
    # on 2 ranks MPI may let rank 0 finish both: rank 1, in a after b, waits on it
    done = {0: {"ops": [op(1, "all_sum", None, (0, 1)), op(2, "all_sum", None, (0, 1))],
                "waiting": None, "in_eval": None},
            1: blocked(True, True, 1)}  # fmt: skip
    for o in done[1]["ops"]:
        o["group_ranks"] = (0, 1)
    g = wait_graph(done, {0: "done", 1: "running"}, NOW)
    assert g.ranks[1].waits_on == (0,) and g.missing == [0]


def test_a_silent_rank_is_said_to_be_silent():
    g = wait_graph({0: None}, {0: "running"}, NOW)
    assert g.ranks[0].status == "silent" and g.ranks[0].text() == "rank 0: not answering"


def test_the_hang_picture_marks_the_cycle_and_the_missing_peer():
    states = {
        r: in_eval([op(1, "send", (r + 1) % 2), op(2, "recv", (r + 1) % 2)]) for r in range(2)
    }
    img = np.asarray(render_waits(wait_graph(states, {0: "running", 1: "running"}, NOW), "x"))
    red = np.all(img == STATES["wrong"][0], axis=-1)
    assert red.sum() > 200  # the cycle's arrows
    for r in range(2):
        assert np.all(img == rank_color(r), axis=-1).sum() > 500  # each rank's node
    waiting = {"seq": 1, "op": "recv", "waits_for": "", "since": NOW - 2.5, "site": ""}
    lone = {0: {"ops": [op(1, "recv", 1)], "waiting": waiting, "in_eval": None}, 1: None}
    img = render_waits(wait_graph(lone, {0: "running", 1: "done"}, NOW), "rank 1 finished")
    assert img.width == 760 and 250 < img.height < 600


def test_ranks_on_several_hosts_say_where_they_run_in_words_and_pictures():
    """Given rank -> host (ranks spanning hosts), every line and node names the host."""
    waiting = {"seq": 1, "op": "recv", "waits_for": "", "since": NOW - 2.5, "site": ""}
    lone = {0: {"ops": [op(1, "recv", 1)], "waiting": waiting, "in_eval": None}, 1: None}
    status = {0: "running", 1: "done"}
    here = wait_graph(lone, status, NOW)
    spread = wait_graph(lone, status, NOW, {0: "node1", 1: "node2"})
    assert spread.text().splitlines()[:2] == [
        "rank 0 on node1: waits on rank 1 in recv #1 from rank 1 of float32[4] (2.5 s), at line 2",
        "rank 1 on node2: finished the cell",
    ]
    assert "node" not in here.text()
    assert 'class="mxnb-host"' in live._html(spread, 3.0) and "node2" in live._html(spread, 3.0)
    assert "mxnb-host" not in live._html(here, 3.0)
    plain, placed = render_waits(here, "x"), render_waits(spread, "x")
    assert placed.height == plain.height + 14  # a host line under the nodes
