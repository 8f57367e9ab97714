"""What a rank leaves in the kernel's profile directory for the kernel to read.

How far a starting rank got: a rank that is still starting has no probe and
is no engine yet, and some of its steps wait without a limit of their own
(MLX's ring ``init``) or on another process (the controller).  If ranks do
not register in time, the kernel should say where each one is, not only that
they did not come.  So each rank writes the step it enters to
``mxnb-start-<rank>``.

Where a rank died: each rank has Python's ``faulthandler`` write to
``mxnb-fault-<rank>``, so a rank killed by a fatal signal leaves the stack of
each of its threads there, written by the dying process itself; what it
writes to its standard error can be lost when the MPI job ends at once.

That directory exists on the kernel's host only; ranks elsewhere write
nothing and are said to have sent no word.
"""

from __future__ import annotations

import os
from typing import TextIO

__all__ = ["STEPS", "enter", "fault_file", "faults_of", "steps_of"]

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


def _fault_path(directory: str, rank: int | str) -> str:
    return os.path.join(directory, f"mxnb-fault-{rank}")


def fault_file(directory: str | None, rank: str) -> TextIO | None:
    """Rank side: the file its fatal-error report goes to (None if ``directory`` is not here)."""
    if not directory or not os.path.isdir(directory):
        return None
    try:
        # kept open for the rank's life: faulthandler writes to its descriptor
        return open(_fault_path(directory, rank), "w")
    except OSError:
        return None


def faults_of(directory: str, ranks: range | list[int]) -> dict[int, str]:
    """Kernel side: the fatal-error report of each of ``ranks`` that wrote one."""
    found = {}
    for rank in ranks:
        try:
            with open(_fault_path(directory, rank), errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if text.strip():
            found[rank] = text
    return found
