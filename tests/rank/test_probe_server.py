"""A rank's probe on a real socket, asked by the kernel's own client (no cluster).

The probe is what a hang report is made of: when it stays silent the report
says "not answering", so it must answer whatever happened to an earlier ask.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from mxnb.kernel.probes import ask, ask_all
from mxnb.protocol.messages import OpLogState
from mxnb.protocol.probe import NONCE_BYTES, split_address
from mxnb.rank.probe_server import PROOF_WAIT, ProbeServer

KEY = b"the cluster's key"


def idle() -> OpLogState:
    return {"running_cell": False, "checked": True, "ops": [], "waiting": None,
            "in_eval": None, "unchecked": []}  # fmt: skip


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[], OpLogState]], ProbeServer]]:
    started: list[ProbeServer] = []

    def _serve(state: Callable[[], OpLogState] = idle) -> ProbeServer:
        probe = ProbeServer("127.0.0.1", 3, state, key=lambda: KEY)
        probe.start()
        started.append(probe)
        return probe

    yield _serve
    for probe in started:
        probe.stop()


def test_it_answers_the_key_holder_with_its_rank(serve):
    probe = serve()
    reply = ask(probe.address, KEY)
    assert reply is not None and reply["rank"] == 3 and reply["running_cell"] is False
    assert ask(probe.address, b"another key") is None


def test_an_ask_left_half_done_does_not_silence_the_next(serve):
    """A kernel interrupted between connecting and proving leaves a connection
    open; the probe used to serve it alone until PROOF_WAIT, so the report made
    right after the stop button said "not answering" (seen on CI)."""
    probe = serve()
    with socket.create_connection(split_address(probe.address), timeout=5) as stalled:
        assert len(stalled.recv(NONCE_BYTES)) == NONCE_BYTES  # accepted, never proved
        t0 = time.monotonic()
        reply = ask(probe.address, KEY, timeout=1.0)
        took = time.monotonic() - t0
    assert reply is not None and reply["rank"] == 3
    assert took < PROOF_WAIT / 2


def test_a_failure_while_answering_is_said_and_the_probe_lives_on(serve, capfd):
    calls = []

    def state() -> OpLogState:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug while reading the op log")
        return idle()

    probe = serve(state)
    assert ask(probe.address, KEY) is None
    assert ask(probe.address, KEY) is not None
    assert "RuntimeError: a bug while reading the op log" in capfd.readouterr().err


def test_a_slow_probe_is_asked_again_before_a_report_calls_it_silent(serve):
    calls = []

    def state() -> OpLogState:
        calls.append(1)
        if len(calls) <= 2:
            time.sleep(1.5)  # a loaded machine, for a moment
        return idle()

    probe = serve(state)
    assert ask_all({3: probe.address}, KEY, timeout=1.0) == {3: None}
    states = ask_all({3: probe.address}, KEY, timeout=1.0, again=3.0)
    assert len(calls) == 3  # slow the first time, answered the second
    assert states[3] is not None and states[3]["rank"] == 3
