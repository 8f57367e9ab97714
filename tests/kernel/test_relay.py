"""LostWatch's rules on stand-in replies (the real relay is killed in test_recovery)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from mxnb.kernel.relay import LostWatch, controller_errors
from mxnb.kernel.runner import CellResult, RankOutcome


class Reply:
    def __init__(self, done: bool) -> None:
        self._done = done

    def done(self) -> bool:
        return self._done


def cell(replied: list[bool], printed: list[str], done: list[bool] | None = None) -> CellResult:
    """A cell's result whose request holds, as ipyparallel's AsyncResult does per
    rank, the reply's future and the output so far."""
    ar = SimpleNamespace(
        _children=[Reply(r) for r in replied],
        _metadata=[{"stdout": p, "stderr": "", "outputs": []} for p in printed],
    )
    done = done or [False] * len(replied)
    outcomes = [RankOutcome(r, done=d) for r, d in enumerate(done)]
    return CellResult(outcomes, extra={"async_result": ar})


IDLE = {"running_cell": False}
BUSY = {"running_cell": True}


def test_idle_ranks_without_their_answer_are_lost_after_a_while():
    watch = LostWatch(after=0.2)
    result = cell([True, False, False], ["", "", ""])
    states = {0: IDLE, 1: IDLE, 2: BUSY}
    assert watch(result, states) == []  # not yet: output can trail a reply
    time.sleep(0.25)
    assert watch(result, states) == [0, 1]  # rank 2 still runs the cell
    assert watch.missing == {0: "output", 1: "reply"}


def test_output_still_arriving_is_not_lost():
    watch = LostWatch(after=0.2)
    states = {0: IDLE}
    for i in range(4):
        assert watch(cell([True], ["x" * (i + 1)]), states) == []
        time.sleep(0.1)
    time.sleep(0.25)
    assert watch(cell([True], ["xxxx"]), states) == [0]


def test_finished_ranks_and_unanswered_probes_are_not_lost():
    watch = LostWatch(after=0.0)
    # rank 0's reply and output are in; rank 1's probe did not answer (None)
    result = cell([True, False], ["", ""], done=[True, False])
    assert watch(result, {0: IDLE, 1: None}) == []


def test_the_controllers_error_lines(tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "ipcontroller-1-a.log").write_text(
        "2026 [IPController] hub::created hub\n"
        "zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:1')\n"
    )
    assert controller_errors(str(tmp_path)) == [
        "zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:1')"
    ]
    assert controller_errors(None) == [] and controller_errors(str(tmp_path / "no")) == []
