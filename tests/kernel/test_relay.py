"""LostWatch's rules on stand-in replies (the real relay is killed in test_recovery)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from mxnb.kernel.relay import LostWatch, controller_errors


class Reply:
    def __init__(self, done: bool) -> None:
        self._done = done

    def done(self) -> bool:
        return self._done


def request(replied: list[bool], printed: list[str]) -> SimpleNamespace:
    """What ipyparallel's AsyncResult holds per rank: the reply's future, the output so far."""
    return SimpleNamespace(
        _children=[Reply(r) for r in replied],
        _metadata=[{"stdout": p, "stderr": "", "outputs": []} for p in printed],
    )


IDLE = {"running_cell": False}
BUSY = {"running_cell": True}


def test_idle_ranks_without_their_answer_are_lost_after_a_while():
    watch = LostWatch(after=0.2)
    ar = request([True, False, False], ["", "", ""])
    done = {0: False, 1: False, 2: False}
    states = {0: IDLE, 1: IDLE, 2: BUSY}
    assert watch(ar, done, states) == []  # not yet: output can trail a reply
    time.sleep(0.25)
    assert watch(ar, done, states) == [0, 1]  # rank 2 still runs the cell
    assert watch.missing == {0: "output", 1: "reply"}


def test_output_still_arriving_is_not_lost():
    watch = LostWatch(after=0.2)
    done, states = {0: False}, {0: IDLE}
    for i in range(4):
        assert watch(request([True], ["x" * (i + 1)]), done, states) == []
        time.sleep(0.1)
    time.sleep(0.25)
    assert watch(request([True], ["xxxx"]), done, states) == [0]


def test_finished_ranks_and_unanswered_probes_are_not_lost():
    watch = LostWatch(after=0.0)
    ar = request([True, False], ["", ""])
    # rank 0's reply and output are in; rank 1's probe did not answer (None)
    assert watch(ar, {0: True, 1: False}, {0: IDLE, 1: None}) == []


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
