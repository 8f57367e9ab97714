"""Build ``least_observer.c`` for this Python, if the machine can (issue 18).

The bench compares the least Python observer of ops with the same observer
compiled, to measure how much of its cost is Python.  Compiling needs a C
compiler and Python's headers; without them the row says so instead of
measuring.  The module is built into a directory of the bench's own and
loaded on the ranks from there; mxnb itself never loads it.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

__all__ = ["build_observer"]

SOURCE = Path(__file__).parent / "least_observer.c"


def build_observer(into: Path) -> tuple[Path | None, str]:
    """(path of the built module, "") or (None, why it could not be built)."""
    from mxnb.rank.fastpath import compile_module

    out = into / f"least_observer{sysconfig.get_config_var('EXT_SUFFIX')}"
    why = compile_module(SOURCE, out, [])
    return (None, why) if why else (out, "")
