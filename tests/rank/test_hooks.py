"""The observation seam: the logger and observers see every op, results are unchanged."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mxnb.rank import hooks


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def before(self, call: hooks.OpCall) -> None:
        self.seen.append(("before", call.op, call.seq))

    def after(self, call: hooks.OpCall) -> None:
        self.seen.append(("after", call.op, call.seq))


@pytest.fixture
def recorder(ophooks):
    rec = Recorder()
    ophooks.add_observer(rec)
    yield rec
    ophooks.remove_observer(rec)


def test_observer_sees_ops_in_order_and_results_unchanged(recorder):
    group = mx.distributed.init()  # a single-process group of size 1
    x = mx.arange(3, dtype=mx.float32)
    y = mx.distributed.all_sum(x, group=group)
    z = mx.distributed.all_gather(x, group=group)
    assert y.tolist() == [0.0, 1.0, 2.0]
    assert z.tolist() == [0.0, 1.0, 2.0]
    ops = [(k, op) for k, op, _ in recorder.seen]
    assert ops == [
        ("before", "all_sum"),
        ("after", "all_sum"),
        ("before", "all_gather"),
        ("after", "all_gather"),
    ]
    seqs = [s for _, _, s in recorder.seen]
    assert seqs[0] == seqs[1] and seqs[2] == seqs[1] + 1


def test_install_is_idempotent_and_uninstall_restores():
    real = mx.distributed.all_sum
    h = hooks.Hooks()
    h.install()
    h.install()
    wrapped = mx.distributed.all_sum
    assert wrapped is not real
    assert wrapped.__mxnb_original__ is real
    h.uninstall()
    assert mx.distributed.all_sum is real


def test_call_site_names_the_calling_line(ophooks, recorder):
    sites = []

    class Sites:
        def before(self, call):
            sites.append(call.site)

        def after(self, call):
            pass

    obs = Sites()
    ophooks.add_observer(obs)
    try:
        mx.distributed.all_sum(mx.ones(2))  # the line under test
    finally:
        ophooks.remove_observer(obs)
    assert sites[0] is not None
    assert sites[0].filename == __file__
    assert "the line under test" in sites[0].code


class Log:
    """A logger that refuses ops on float16 arrays, as the monitor refuses bool ones."""

    def __init__(self, seen: list[tuple[str, str, int]]) -> None:
        self.seen = seen
        self.tokens: list[tuple[object, object]] = []

    def log(self, op, args, kwargs, seq, site):
        if args[0].dtype == mx.float16:
            raise ValueError("refused")
        self.seen.append(("log", op, seq))
        return ("token", seq, site)

    def logged(self, token, result):
        self.tokens.append((token, result))


def test_logger_sees_each_op_first_and_may_refuse_it(ophooks, recorder):
    log = Log(recorder.seen)
    ophooks.set_logger(log)
    try:
        y = mx.distributed.all_sum(mx.ones(2))  # logged line
        with pytest.raises(ValueError, match="refused"):
            mx.distributed.all_sum(mx.ones(2, dtype=mx.float16))
    finally:
        ophooks.set_logger(None)
    assert [(k, op) for k, op, _ in recorder.seen] == [
        ("log", "all_sum"),
        ("before", "all_sum"),
        ("after", "all_sum"),
    ]
    # the token from log() comes back to logged() with the very result
    ((token, result),) = log.tokens
    assert result is y and token[1] == recorder.seen[0][2]
    assert "logged line" in hooks.resolve(token[2]).code


def test_logger_alone_takes_the_short_path_with_the_same_result(ophooks):
    seen: list[tuple[str, str, int]] = []
    log = Log(seen)
    ophooks.set_logger(log)
    try:
        y = mx.distributed.all_sum(mx.arange(3, dtype=mx.float32))
    finally:
        ophooks.set_logger(None)
    assert y.tolist() == [0.0, 1.0, 2.0]
    assert [op for _, op, _ in seen] == ["all_sum"]
    assert log.tokens[0][1] is y


def test_a_raw_site_resolves_to_the_line_the_frame_was_on():
    import sys

    seen = []

    def where():
        frame = sys._getframe(1)
        seen.append((hooks.resolve(hooks.raw_site(frame)).line, frame.f_lineno))

    # a long body, a call spread over lines, a loop and an except clause
    body = "".join(f"    a{i} = {i}\n" for i in range(300))
    src = (
        "def f():\n" + body + "    where()\n"
        "    len([1,\n         where()])\n"
        "    for _ in range(2):\n        where()\n"
        "    try:\n        raise ValueError\n    except ValueError:\n        where()\n"
    )
    ns = {"where": where}
    exec(compile(src, "<long cell>", "exec"), ns)
    ns["f"]()
    assert len(seen) == 5
    assert [got for got, _ in seen] == [want for _, want in seen]
    assert seen[0][0] == 302
