"""A rank names cells by the notebook's execution count, as the notebook does.

The rank's IPython would number a cell by its own count of executions
(``In[3]`` for the notebook's ``[8]``, and from 1 again after the ranks
restart).  Its compiler is told the number the cell's header carries
(:mod:`mxnb.protocol.cells`), so tracebacks, hang reports and traces all
say ``In[8]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mxnb.protocol.cells import HEADER

__all__ = ["number_cells"]


def number_cells(shell: Any) -> Callable[[], None]:
    """Make ``shell`` number cells that carry a header by it; returns the undo."""
    compiler = shell.compile
    real = compiler.cache

    def cache(transformed_code: str, number: int = 0, raw_code: str | None = None) -> str:
        m = HEADER.match(raw_code if raw_code is not None else transformed_code)
        return real(transformed_code, int(m.group(1)) if m else number, raw_code)

    compiler.cache = cache

    def undo() -> None:
        if compiler.cache is cache:
            del compiler.cache  # the class's own method shows through again

    return undo
