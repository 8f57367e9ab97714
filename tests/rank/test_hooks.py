"""The observation seam: the logger sees every op, results are unchanged."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mxnb.rank import hooks


class Log:
    """A logger that refuses ops on float16 arrays, as the monitor refuses bool ones."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.tokens: list[tuple[object, object]] = []
        self.failed_tokens: list[object] = []

    def log(self, op, args, kwargs, seq, site):
        if args[0].dtype == mx.float16:
            raise ValueError("refused")
        self.seen.append((op, seq))
        return ("token", seq, site)

    def logged(self, token, result):
        self.tokens.append((token, result))

    def failed(self, token):
        self.failed_tokens.append(token)


@pytest.fixture
def log(ophooks):
    log = Log()
    ophooks.set_logger(log)
    yield log
    ophooks.set_logger(None)


def test_logger_sees_ops_in_order_and_results_unchanged(log):
    group = mx.distributed.init()  # a single-process group of size 1
    x = mx.arange(3, dtype=mx.float32)
    y = mx.distributed.all_sum(x, group=group)
    z = mx.distributed.all_gather(x, group=group)
    assert y.tolist() == [0.0, 1.0, 2.0]
    assert z.tolist() == [0.0, 1.0, 2.0]
    assert [op for op, _ in log.seen] == ["all_sum", "all_gather"]
    (_, sa), (_, sb) = log.seen
    assert sb == sa + 1
    # the token from log() comes back to logged() with the very result
    assert [t[:2] for t, _ in log.tokens] == [("token", sa), ("token", sb)]
    assert log.tokens[0][1] is y and log.tokens[1][1] is z


def test_without_a_logger_ops_go_straight_to_mlx(ophooks):
    log = Log()
    ophooks.set_logger(log)
    ophooks.set_logger(None)
    y = mx.distributed.all_sum(mx.arange(3, dtype=mx.float32))
    assert y.tolist() == [0.0, 1.0, 2.0] and log.seen == [] and ophooks.seq == 0


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


def test_call_site_names_the_calling_line(log):
    mx.distributed.all_sum(mx.ones(2))  # the line under test
    site = hooks.resolve(log.tokens[0][0][2])
    assert site.filename == __file__
    assert "the line under test" in site.code


def test_a_refused_op_never_reaches_mlx(log):
    with pytest.raises(ValueError, match="refused"):
        mx.distributed.all_sum(mx.ones(2, dtype=mx.float16))
    assert log.seen == [] and log.tokens == []


def test_a_call_mlx_refuses_hands_its_token_back_as_failed(log):
    with pytest.raises(TypeError):
        mx.distributed.all_sum(mx.ones(2), no_such_argument=1)
    (seq,) = [s for _, s in log.seen]
    assert log.tokens == [] and [t[:2] for t in log.failed_tokens] == [("token", seq)]


def test_an_argument_is_read_by_position_or_by_name():
    x = mx.ones(2)
    assert hooks.op_arg((x,), {}, 0, "x") is x and hooks.op_arg((), {"x": x}, 0, "x") is x
    assert (
        hooks.op_peer("send", (x, 3), {}) == 3 and hooks.op_peer("recv_like", (x,), {"src": 1}) == 1
    )
    assert hooks.op_peer("all_sum", (x,), {}) is None


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


def test_what_mlx_makes_of_an_input_is_read_without_importing_numpy():
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from mxnb.rank.hooks import input_meta\n"
        "print(input_meta(3.0), input_meta(True), input_meta('x'), 'numpy' in sys.modules)\n"
        "import numpy as np\n"
        "print(input_meta(np.ones((2, 3))), input_meta(np.int16(1)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "((), 'float32') ((), 'bool') None False",
        "((2, 3), 'float32') ((), 'int16')",
    ]
