"""How a notebook cell travels to the ranks: one header line, then the cell.

The header, ``# In[8]: %%mxdist -n 4``, stands where the ``%%mxdist`` line
stands in the editor, so a rank counts lines as the editor does, and it
carries the notebook's execution count, so a rank names the cell as the
notebook does (:mod:`mxnb.rank.numbering`).
"""

from __future__ import annotations

import re

__all__ = ["HEADER", "header"]

HEADER = re.compile(r"# In\[(\d+)\]: %%mxdist")


def header(count: int, line: str) -> str:
    """The first line of a cell as sent to the ranks."""
    return f"# In[{count}]: %%mxdist {line}".rstrip()
