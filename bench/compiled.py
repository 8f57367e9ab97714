"""Build ``least_observer.c`` for this Python, if the machine can (issue 18).

The bench compares the least Python observer of ops with the same observer
compiled, to measure how much of its cost is Python.  Compiling needs a C
compiler and Python's headers; without them the row says so instead of
measuring.  The module is built into a directory of the bench's own and
loaded on the ranks from there: mxnb itself stays pure Python.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

__all__ = ["build_observer"]

SOURCE = Path(__file__).parent / "least_observer.c"


def build_observer(into: Path) -> tuple[Path | None, str]:
    """(path of the built module, "") or (None, why it could not be built)."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        return None, f"no C compiler ({cc[0] if cc else 'cc'})"
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        return None, f"no Python headers in {include}"
    out = into / f"least_observer{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [*cc, "-O2", "-shared", "-fPIC", f"-I{include}", str(SOURCE), "-o", str(out)]
    if sysconfig.get_platform().startswith("macosx"):
        cmd[1:1] = ["-undefined", "dynamic_lookup"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return None, f"the C compiler failed: {last}"
    return out, ""
