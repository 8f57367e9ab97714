"""Ops inside ``mx.compile``: checked each time the compiled graph runs them.

MLX runs a compiled function's Python only when it traces it, once per
input signature; later calls replay the graph.  A rank that replays and a
rank that traces again must still post the same checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mxnb
from mxnb.errors import RankError
from mxnb.rank.compiled import Compiled, CompileHook


@pytest.fixture
def hook() -> Iterator[CompileHook]:
    h = CompileHook()
    h.install()
    yield h
    h.uninstall()


def test_compile_is_wrapped_and_put_back(hook):
    import mlx.core as mx

    f = mx.compile(lambda x: x * 2)
    assert isinstance(f, Compiled)
    assert f(mx.array([1.0, 2.0])).tolist() == [2.0, 4.0]
    assert hook.tracing_possible()  # this MLX traces compiled functions here
    hook.uninstall()
    assert not isinstance(mx.compile(lambda x: x), Compiled)
    hook.install()


def test_a_compiled_function_on_a_class_binds_no_self(hook):
    """As MLX's own compiled object: kept on a class, it is called as is."""
    import mlx.core as mx

    class Model:
        double = mx.compile(lambda x: x * 2)

    assert Model().double(mx.array([3.0])).tolist() == [6.0]


def test_mlx_own_compiled_functions_are_left_alone(hook):
    import mlx.core as mx

    def act(x):
        return x + 1

    act.__module__ = "mlx.nn.layers.activations"
    assert not isinstance(mx.compile(act), Compiled)


def test_tracing_is_known_only_while_python_runs_inside_a_trace(hook):
    import mlx.core as mx

    seen = []

    def f(x):
        seen.append(bool(hook.stack))
        return x + 1

    g = mx.compile(f)
    g(mx.zeros(2))
    g(mx.zeros(2))  # replayed: Python does not run
    g(mx.zeros(3))  # a new signature: traced again
    assert seen == [True, True]
    assert not hook.stack
    mx.disable_compile()
    try:
        g(mx.zeros(2))  # called straight through: an ordinary call
        assert seen[-1] is False
    finally:
        mx.enable_compile()


# -- on a real cluster ------------------------------------------------------

TOTAL = "def total(v):\n    return mx.distributed.all_sum(mx.sum(v))\nf = mx.compile(total)\n"


@pytest.mark.cluster
def test_a_replayed_compiled_collective_is_checked(run, nranks, magics):
    """Rank 0 replays its cached graph of float32[3]; the others trace again
    for float32[4].  Before, rank 0 went into MPI unchecked and the others
    waited in a check rank 0 never posted: a frozen cell."""
    profile = magics.cluster.profile_dir
    run(
        "def mean(v):\n    return mx.distributed.all_sum(v) / size\n"
        "g = mx.compile(mean)\nfirst = g(mx.ones(3))\nmx.eval(first)\n"
    )
    with pytest.raises(RankError) as info:
        run("second = g(mx.ones(3 if rank == 0 else 4))\nmx.eval(second)\n", "--timeout 30")
    err = str(info.value)
    assert info.value.ranks == list(range(nranks))
    assert "CommMismatch" in err and "rank 0 has float32[3]" in err
    assert "float32[4]" in err and "the MPI job was stopped" not in err
    run("ok = g(mx.ones(3)).tolist()")  # the same ranks, the same compiled function
    assert mxnb.pull("ok") == [[1.0, 1.0, 1.0]] * nranks
    assert magics.cluster.profile_dir == profile


@pytest.mark.cluster
def test_ranks_that_trace_and_replay_still_agree(run, nranks):
    """Shards of different sizes summed to a scalar: legitimate.  Rank 0
    replays its trace, the others trace again; the checks must still pair."""
    run(TOTAL + "a = f(mx.ones(3)).item()\nb = f(mx.ones(3 + rank)).item()\n", "--timeout 30")
    expect = sum(3 + r for r in range(nranks))
    assert mxnb.pull("a") == [3.0 * nranks] * nranks
    assert mxnb.pull("b") == [float(expect)] * nranks


@pytest.mark.cluster
def test_a_compiled_training_step_is_checked_at_every_step(run, nranks, magics):
    """The shape of the usual data-parallel step: state captured by
    ``mx.compile``, gradients averaged inside, the state evaluated."""
    step = (
        "import mlx.nn as nn, mlx.optimizers as optim\n"
        "from functools import partial\n"
        "from mlx.nn.utils import average_gradients\n"
        "mx.random.seed(rank)\n"
        "model = nn.Sequential(nn.Linear(4, {width}), nn.ReLU(), nn.Linear({width}, 1))\n"
        "opt = optim.SGD(learning_rate=0.1)\n"
        "lg = nn.value_and_grad(model, lambda m, x, y: nn.losses.mse_loss(m(x), y))\n"
        "state = [model.state, opt.state]\n"
        "@partial(mx.compile, inputs=state, outputs=state)\n"
        "def step(x, y):\n"
        "    loss, grads = lg(model, x, y)\n"
        "    opt.update(model, average_gradients(grads))\n"
        "    return loss\n"
        "for i in range(3):\n"
        "    step(mx.random.normal((8, 4)), mx.random.normal((8, 1)))\n"
        "    mx.eval(state)\n"
        "w = model.layers[0].weight\n"
    )
    # same shapes: the updates agree, so every rank moved its weights alike
    run(step.format(width=8) + "moved = (w - model.layers[0].weight).tolist()\n")
    run("d = mx.distributed.all_gather(model.layers[-1].bias) - model.layers[-1].bias\n"
        "spread = mx.abs(d).max().item()\n")  # fmt: skip
    assert mxnb.pull("spread")[0] > 0  # the ranks started from different seeds ...
    # ... and one rank with a wider model is refused at its first step
    with pytest.raises(RankError) as info:
        run(step.format(width="8 + (rank == 1)"), "--timeout 30")
    assert "CommMismatch" in str(info.value) and "all_sum on world" in str(info.value)
    run("ok = True")


@pytest.mark.cluster
def test_a_compiled_collective_on_one_rank_is_diagnosed(run, nranks, magics, capsys):
    profile = magics.cluster.profile_dir
    run(TOTAL + "mx.eval(f(mx.ones(2)))\n")
    with pytest.raises(RankError) as info:
        run("if rank == 0:\n    print(f(mx.ones(2)))\n", "--timeout 30")
    assert "finished the cell without calling all_sum" in str(info.value)
    # the live report names the op and its line in the function (the cell counts %%mxdist as 1)
    out = capsys.readouterr().out
    assert "in all_sum #1 of float32[]" in out
    assert "line 3: return mx.distributed.all_sum(mx.sum(v))" in out
    run("ok = f(mx.ones(2)).item()")
    assert mxnb.pull("ok") == [2.0 * nranks] * nranks
    assert magics.cluster.profile_dir == profile


@pytest.mark.cluster
def test_compiled_send_and_recv_are_checked_each_time(run, nranks):
    run(
        "def shift(x):\n"
        "    s = mx.distributed.send(x, (rank + 1) % size)\n"
        "    r = mx.distributed.recv_like(x, (rank - 1) % size, stream=mx.new_stream(mx.cpu))\n"
        "    return s, r\n"
        "g = mx.compile(shift)\n"
        "got = []\n"
        "for i in range(3):\n"
        "    s, r = g(mx.ones(2) * (10 * i + rank))\n"
        "    mx.eval(s, r)\n"
        "    got.append(r.tolist())\n",
        "--timeout 30",
    )
    got = mxnb.pull("got")
    for rank, mine in enumerate(got):
        left = (rank - 1) % nranks
        assert mine == [[10.0 * i + left] * 2 for i in range(3)]
    pair = (
        "def swap(x):\n"
        "    s = mx.distributed.send(x, 1 - rank)\n"
        "    r = mx.distributed.recv_like(x, 1 - rank, stream=mx.new_stream(mx.cpu))\n"
        "    return s, r\n"
        "h = mx.compile(swap)\n"
        "if rank < 2:\n"
        "    mx.eval(h(mx.ones(2)))\n"
    )
    run(pair, "--timeout 30")
    with pytest.raises(RankError) as info:  # rank 0 replays float32[2], rank 1 traces [3]
        run("if rank < 2:\n    mx.eval(h(mx.ones(2 + rank)))\n", "--timeout 30")
    assert info.value.ranks == [0, 1]
    assert "rank 0 sends float32[2] to rank 1, rank 1 expects float32[3]" in str(info.value)


@pytest.mark.cluster
@pytest.mark.parametrize("line", ["", "--no-check"], ids=["checked", "unchecked"])
def test_the_trace_shows_each_run_of_a_compiled_op(run, nranks, line):
    run(
        "def mean(v):\n    return mx.distributed.all_sum(v) / size\n"
        "g = mx.compile(mean)\n"
        "for i in range(3):\n    mx.eval(g(mx.ones(3) * i))\n",
        line,
    )
    text = mxnb.last_trace().text()
    assert text.splitlines()[0].startswith("mxnb trace: 3 ops on ranks")
    assert "#1 all_sum on world" in text and "line 3: return mx.distributed.all_sum(v)" in text
    assert "float32 (3,) -> float32 (3,): (inside mx.compile: not visible to Python) |" in text
    assert text.count("evaluated in") == nranks  # the first run; the fold says the rest
    assert "the same 1 op ran 2 more times (#2-#3), each time: ok" in text


@pytest.mark.cluster
def test_a_function_traced_in_a_bare_cell_is_checked_after_it(run, nranks, magics):
    """Traced in --bare, where nothing is observed, the function left no
    templates.  Replayed in a checked cell, its all_sum ran unchecked: rank 0
    went into MPI, the others waited in a check, and the cell froze."""
    profile = magics.cluster.profile_dir
    run(TOTAL.replace("mx.sum(v)", "v") + "mx.eval(f(mx.ones(3)))\n", "--bare")
    with pytest.raises(RankError) as info:
        run("out = f(mx.ones(3 if rank == 0 else 4))\nmx.eval(out)\n", "--timeout 30")
    err = str(info.value)
    assert "CommMismatch" in err and "rank 0 has float32[3]" in err
    assert "the MPI job was stopped" not in err
    assert magics.cluster.profile_dir == profile  # the ranks were kept
    run("ok = f(mx.ones(3)).tolist()")  # and each run is in the trace again
    assert mxnb.pull("ok") == [[float(nranks)] * 3] * nranks
    assert "#1 all_sum on world" in mxnb.last_trace().text()
