"""Why ranks on other hosts did not start, in one sentence that names the host.

Open MPI explains a failed start in a long block written for every cause at
once; the few causes a notebook user meets are told apart here by what the
block and the lines before it hold, and said with what to do.
"""

from __future__ import annotations

import re
import sys

__all__ = ["start_failure"]

_REMOTE = re.compile(r"Remote host:\s*(\S+)")
_STATUS = re.compile(r"Daemon exit status:\s*(\d+)")
_EXEC = re.compile(r"could not access or execute an executable.*?Node:\s*(\S+)", re.S)
_OURS = re.compile(r"^mxnb rank .*$", re.M)


def start_failure(output: str) -> str | None:
    """The sentence for mpiexec's ``output``, or None when the cause is not one of these."""
    ours = _OURS.search(output)
    if ours:  # a rank said it itself (e.g. the controller is out of its reach)
        return ours.group(0).removeprefix("mxnb ")
    host = _REMOTE.search(output)
    if host:
        status = _STATUS.search(output)
        code = int(status.group(1)) if status else None
        where = host.group(1)
        if code == 127 or "not found" in output or "No such file" in output:
            return (
                f"host {where} has no {sys.prefix}: Open MPI's daemon could not start there. "
                "mxnb needs this Python environment at the same path on every host "
                "(a shared file system, or the same install on each)."
            )
        if code == 255:
            return (
                f"host {where} could not be reached (ssh failed, exit status 255): check its "
                f"name, and that `ssh {where}` logs in without a password or prompt."
            )
        return (
            f"Open MPI's daemon on host {where} failed"
            + (f" (exit status {code})" if code is not None else "")
            + "; its output is below."
        )
    ex = _EXEC.search(output)
    if ex:
        return (
            f"host {ex.group(1)} cannot run {sys.executable}: mxnb needs this Python "
            "environment at the same path on every host."
        )
    return None
