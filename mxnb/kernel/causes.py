"""Causes of MLX's own errors that its words do not say.

A rank's traceback is MLX's, unchanged; where the reason behind it is a fact
of the machine that the message hides, the report adds one "Likely cause"
line that says what to do.  One such fact so far: MLX compiles a function
for the CPU by writing C++ into ``$TMPDIR/mlx/<version>/cpu`` (``/tmp``
without TMPDIR) and running the compiler on it.  The first user of a shared
machine to compile makes that directory, writable by them alone; for every
other user the write fails unchecked and the compiler reports the file
missing, on every rank, in every compiled function.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the check runs in a bare process too (tests/kernel/test_causes.py)
    from mxnb.kernel.runner import RankOutcome

__all__ = ["compile_cache_cause", "likely_cause", "locked_owner"]

#: MLX's message when the compiler does not find the source MLX meant to write.
_UNWRITTEN = re.compile(
    r'Failed to compile function .*?"(?P<source>[^"\s]+\.cpp)".*?No such file or directory', re.S
)


def locked_owner(path: Path) -> str | None:
    """Who owns ``path``, if it is a directory this user may not write in; else None."""
    if not path.is_dir() or os.access(path, os.W_OK):
        return None
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return "another user"


def compile_cache_cause(
    message: str, here: bool = True, owner_of: Callable[[Path], str | None] = locked_owner
) -> str | None:
    """For MLX's CPU compile failing on a source it could not write, what to do.

    ``here``: the ranks run on this machine, so the directory can be looked at.
    """
    m = _UNWRITTEN.search(message)
    if m is None:
        return None
    cache = Path(m.group("source")).parent
    top = cache.parent.parent  # .../mlx, above <version>/cpu
    fix = (
        "MLX compiles under $TMPDIR (else /tmp): start Jupyter with TMPDIR set to "
        "a directory of your own"
    )
    owner = owner_of(cache) if here else None
    if owner is not None:
        return (
            f"MLX writes the C++ of a compiled function into {cache}, which belongs to the user "
            f"{owner}, and this user may not write there. {fix}, or have {owner} "
            f"remove {top}."
        )
    return (
        f"MLX could not write the C++ of a compiled function into {cache} on the ranks' "
        f"machine (a directory made by another user is the usual reason). {fix}."
    )


def likely_cause(failed: Iterable[RankOutcome], here: bool = True) -> str:
    """The one cause to add to a report of ranks that raised, or ""."""
    for o in failed:
        error = o.error or {}
        cause = compile_cache_cause(f"{error.get('evalue', '')}", here)
        if cause:
            return f"Likely cause: {cause}"
    return ""
