"""The baseline: a standalone MPI program doing what a %%mxdist cell does.

Run under ``mpiexec -n N python bench/raw_mpi.py MODE [SIZE REPS]``; with
``MXNB_BACKEND=ring`` and ``MLX_HOSTFILE`` set, on MLX's ring backend instead.
``start``: initialise MLX over MPI and do one all_sum (cold-start baseline).
``allsum``: time ``mx.eval(all_sum(x))`` for a float32 array of SIZE bytes;
rank 0 prints the median seconds per op as JSON.
``step``: time REPS steps of a compiled data-parallel training step
(:func:`timed_step`); rank 0 prints the median seconds per step.
"""

from __future__ import annotations

import json
import os
import sys
import time


def timed_allsum(mx, group, nbytes: int, reps: int, spin: float = 0.0) -> float:
    """Median seconds of ``mx.eval(all_sum(x))``.

    ``spin``: seconds of busy Python before each op, inside the timed step,
    standing for what a wrapper does between two ops.
    """
    x = mx.ones(max(1, nbytes // 4), dtype=mx.float32)
    mx.eval(x)
    for _ in range(3):
        mx.eval(mx.distributed.all_sum(x, group=group))
    times = []
    clock = time.perf_counter
    for _ in range(reps):
        t = clock()
        if spin:
            while clock() - t < spin:
                pass
        mx.eval(mx.distributed.all_sum(x, group=group))
        times.append(clock() - t)
    return sorted(times)[len(times) // 2]


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
