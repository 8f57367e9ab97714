"""How far a starting rank got: the step it is in, in a file the kernel reads.

A rank that is still starting has no probe and is no engine yet, and some of
its steps wait without a limit of their own (MLX's ring ``init``) or on
another process (the controller).  If ranks do not register in time, the
kernel should say where each one is, not only that they did not come.  So
each rank writes the step it enters to ``mxnb-start-<rank>`` in the
cluster's profile directory.  That directory exists on the kernel's host
only; ranks elsewhere write nothing and are said to have sent no word.
"""

from __future__ import annotations

import os

__all__ = ["STEPS", "enter", "steps_of"]

#: Each step a rank enters while it starts, and how the kernel says it.
STEPS = {
    "addresses": "telling the other ranks where it listens for MLX's ring",
    "mlx": "in MLX's {backend} init",
    "import": "importing ipyparallel's engine",
    "connect": "waiting for the controller's connection file",
    "engine": "registering with the controller",
}


def _path(directory: str, rank: int | str) -> str:
    return os.path.join(directory, f"mxnb-start-{rank}")


def enter(step: str, directory: str | None, rank: str) -> None:
    """Rank side: note that this rank enters ``step`` (nothing if ``directory`` is not here)."""
    if not directory or not os.path.isdir(directory):
        return
    try:
        with open(_path(directory, rank), "w") as f:
            f.write(step)
    except OSError:  # a note for a report: never what stops a rank
        pass


def steps_of(directory: str, ranks: range | list[int]) -> dict[int, str]:
    """Kernel side: the step each of ``ranks`` last entered, for those that wrote one."""
    found = {}
    for rank in ranks:
        try:
            with open(_path(directory, rank)) as f:
                step = f.read().strip()
        except OSError:
            continue
        if step in STEPS:
            found[rank] = step
    return found
