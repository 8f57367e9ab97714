"""The baseline: a standalone MPI program doing what a %%mxdist cell does.

Run under ``mpiexec -n N python bench/raw_mpi.py MODE [SIZE REPS]``; with
``MXNB_BACKEND=ring`` and ``MLX_HOSTFILE`` set, on MLX's ring backend instead.
``start``: initialise MLX over MPI and do one all_sum (cold-start baseline).
``allsum``: time ``mx.eval(all_sum(x))`` for a float32 array of SIZE bytes;
rank 0 prints the median seconds per op as JSON.
``step``: time REPS steps of a compiled data-parallel training step
(:func:`timed_step`); rank 0 prints the median seconds per step.
``serve DIR``: stay up and time :func:`loop_allsum` each time the bench asks
(:class:`cases.Standalone`), so that its loop and a notebook's alternate
within seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time


def timed_allsum(mx, group, nbytes: int, reps: int, spin: float = 0.0, observe: str = "") -> float:
    """Median seconds of ``mx.eval(all_sum(x))``.

    ``spin``: seconds of busy Python before each op, inside the timed step,
    standing for what a wrapper does between two ops.  ``observe``: the op
    and ``mx.eval`` go through :func:`least_observer`'s wrappers ("python"),
    or through the same observer compiled (the path of the module
    ``bench/compiled.py`` built).
    """
    x = mx.ones(max(1, nbytes // 4), dtype=mx.float32)
    mx.eval(x)
    all_sum, evaluate = mx.distributed.all_sum, mx.eval
    if observe == "python":
        all_sum, evaluate = least_observer(mx, all_sum, evaluate)
    elif observe:
        all_sum, evaluate = compiled_observer(observe).observe(all_sum, evaluate)
    for _ in range(3):
        evaluate(all_sum(x, group=group))
    times = []
    clock = time.perf_counter
    for _ in range(reps):
        t = clock()
        if spin:
            while clock() - t < spin:
                pass
        evaluate(all_sum(x, group=group))
        times.append(clock() - t)
    return sorted(times)[len(times) // 2]


def loop_allsum(mx, group, nbytes: int, reps: int) -> float:
    """Seconds per op of a loop of ``mx.eval(all_sum(x))``, timed as a whole.

    What a stopwatch around a user's loop reads: unlike the median of
    :func:`timed_allsum`, it includes whatever mxnb does now and then rather
    than at every op (turning its notes into records once per 16,384 notes,
    a garbage collection).
    """
    x = mx.ones(max(1, nbytes // 4), dtype=mx.float32)
    mx.eval(x)
    all_sum, evaluate = mx.distributed.all_sum, mx.eval
    for _ in range(3):
        evaluate(all_sum(x, group=group))
    t = time.perf_counter()
    for _ in range(reps):
        evaluate(all_sum(x, group=group))
    return (time.perf_counter() - t) / reps


def serve(mx, group, where: str) -> None:
    """Time :func:`loop_allsum` whenever a line ``NBYTES REPS`` arrives on this
    rank's FIFO (``in<rank>``); rank 0 writes the slowest rank's seconds to
    ``out.json``.  ``quit`` ends the job.

    Each rank waits for its line in a blocking read, using no CPU, so the
    job takes nothing from a notebook's ranks measured in between.
    """
    rank = group.rank()
    while True:
        with open(os.path.join(where, f"in{rank}")) as f:
            words = f.readline().split()
        if not words or words[0] == "quit":
            return
        t = loop_allsum(mx, group, int(words[0]), int(words[1]))
        slowest = mx.distributed.all_max(mx.array([t]), group=group).item()
        if rank == 0:
            part = os.path.join(where, "out.part")
            with open(part, "w") as f:
                f.write(json.dumps({"seconds": slowest}))
            os.replace(part, os.path.join(where, "out.json"))


def least_observer(mx, all_sum, evaluate):
    """The least any Python observer of ops and evaluations does (issue 18).

    The op's wrapper finds its calling line, its dtype (refusals depend on it)
    and a weak handle on its result, and notes them in one tuple; the
    evaluation's wrapper reads the clock around MLX's and notes which arrays
    it was handed.  No checks, no records, no lookups: a floor for mxnb's op
    log and recording, which do all of this and more.
    """
    import weakref

    getframe, clock, ref = sys._getframe, time.perf_counter, weakref.ref
    ops: list[tuple] = []
    evals: list[tuple] = []
    live: dict[int, object] = {}
    names = {mx.float32: "float32"}

    def op(*args, **kwargs):
        frame = getframe(1)
        dtype = names.get(args[0].dtype)
        out = all_sum(*args, **kwargs)
        handle = ref(out)
        ops.append((len(ops) + 1, frame.f_code, frame.f_lasti, args[0].shape, dtype, handle))
        live[id(out)] = handle
        if len(ops) > 4096:  # bounded, as mxnb's own log is
            ops.clear()
            live.clear()
        return out

    def ev(*arrays):
        t0 = clock()
        evaluate(*arrays)
        evals.append((t0, clock(), [live.get(id(a)) for a in arrays]))
        if len(evals) > 4096:
            evals.clear()

    return op, ev


def compiled_observer(path: str):
    """The compiled least observer (``least_observer.c``), loaded from ``path``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("least_observer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed_step(mx, reps: int) -> float:
    """Median seconds of one compiled training step and its ``mx.eval``.

    An 8-layer MLP (64 wide) on a batch of 32, gradients averaged inside the
    compiled step by ``average_gradients`` (one all_sum of 33,345 floats),
    state captured by ``mx.compile``: the usual data-parallel step.
    """
    from functools import partial

    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.nn.utils import average_gradients

    mx.random.seed(0)
    layers = [layer for _ in range(8) for layer in (nn.Linear(64, 64), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(64, 1))
    opt = optim.SGD(learning_rate=0.01)
    grad = nn.value_and_grad(model, lambda m, x, y: nn.losses.mse_loss(m(x), y))
    state = [model.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        loss, grads = grad(model, x, y)
        opt.update(model, average_gradients(grads))
        return loss

    x, y = mx.random.normal((32, 64)), mx.random.normal((32, 1))
    for _ in range(5):
        step(x, y)
        mx.eval(state)
    times = []
    clock = time.perf_counter
    for _ in range(reps):
        t = clock()
        step(x, y)
        mx.eval(state)
        times.append(clock() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    import mlx.core as mx

    # MXNB_BACKEND=ring (with MLX_HOSTFILE): MLX's ring backend, as mxnb's ranks run it
    backend = os.environ.get("MXNB_BACKEND", "mpi")
    if backend == "ring":
        os.environ["MLX_RANK"] = os.environ["OMPI_COMM_WORLD_RANK"]
    group = mx.distributed.init(strict=True, backend=backend)
    mode = sys.argv[1]
    if mode == "start":
        mx.eval(mx.distributed.all_sum(mx.ones(3), group=group))
        return
    if mode == "serve":
        serve(mx, group, sys.argv[2])
        return
    if mode == "step":
        med = timed_step(mx, int(sys.argv[2]))
    else:
        nbytes, reps = int(sys.argv[2]), int(sys.argv[3])
        med = timed_allsum(mx, group, nbytes, reps)
    # the slowest rank decides when an op is done
    slowest = mx.distributed.all_max(mx.array([med]), group=group).item()
    if group.rank() == 0:
        print(json.dumps({"median_s": slowest}))


if __name__ == "__main__":
    main()
