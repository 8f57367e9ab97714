"""Where a rank that died was in the cell, from its fatal-error report.

Each rank has Python's ``faulthandler`` write the stack of each of its
threads when a fatal signal kills it (a heap that MPI corrupted, an abort
inside MLX): to a file in the kernel's profile directory when the rank runs
on the kernel's host (:mod:`mxnb.protocol.startup`), else to its standard
error, which mpiexec forwards if the job lives long enough.  From it the
crash report says at which line of the cell the rank was and whether it was
evaluating, and, when mpiexec forwarded it, what the C library or MPI said
just before: far more than "rank 1 was killed by signal 6".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LastWords", "last_words"]

_THREAD = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$")
_LOG = re.compile(r"^(?:\d{4}-\d\d-\d\d |\[|\s)")
#: What the C library says of a heap something wrote past, and MPI of a buffer too short.
_OVERRUN = ("double free", "corrupted", "free(): invalid", "malloc(): ", "MPI_ERR_TRUNCATE")
#: How the C library's and the C++ runtime's messages about a dying process begin.
_LAST_WORDS = ("double free", "corrupted ", "free(): ", "malloc(): ", "munmap_chunk(): ",
               "realloc(): ", "terminate called ")  # fmt: skip


@dataclass(frozen=True)
class LastWords:
    """Where in the cell a dead rank was, and the message it died with."""

    line: int | None  # of the cell, as the editor counts (None: not found)
    code: str  # that line's code
    evaluating: bool  # inside mxnb's evaluation entry (mx.eval and the like)
    said: str  # the C library's or MPI's message, if any

    def sentence(self) -> str:
        """`` at line 6 (mx.eval(a)), while evaluating``: appended to the crash sentence."""
        if self.line is None:
            return ""
        code = f" ({self.code})" if self.code else ""
        return f" at line {self.line}{code}" + (", while evaluating" if self.evaluating else "")

    @property
    def overrun(self) -> bool:
        """Whether it died of a buffer written past its end (a heap corrupted, a
        message truncated), the mark of MPI pairing data of different sizes."""
        return any(word in self.said for word in _OVERRUN)


def last_words(
    report: str, cell: str, pid: int | None = None, output: str = ""
) -> LastWords | None:
    """Where a dead rank was, from its fatal-error ``report`` (its fault file, or
    mpiexec's output, where ``pid`` picks its stacks out of every rank's);
    ``cell``: the code the ranks ran, its header line first, so that line
    numbers are the editor's; ``output``: mpiexec's, for what the rank said.

    None if its stacks are not (yet) in ``report``.
    """
    lines = report.splitlines()
    who = str(pid) if pid is not None else r"\d+"
    mark = re.compile(rf'File "[^"]*ipykernel_{who}[/\\][^"]+", line (\d+) in <module>')
    start = None  # the first line of the current thread's stack
    for i, text in enumerate(lines):
        if _THREAD.match(text.strip()):
            start = i + 1
            continue
        m = mark.search(text)
        if m is None or start is None:
            continue
        line = int(m.group(1))
        code_lines = cell.splitlines()
        code = code_lines[line - 1].strip() if 0 < line <= len(code_lines) else ""
        evaluating = "mxnb/rank/entries.py" in lines[start].replace("\\", "/")
        return LastWords(line, code, evaluating, _message(lines) or _message(output.splitlines()))
    return None


def _message(lines: list[str]) -> str:
    """What a dying process said: the line it wrote just before Python's
    fatal-error report, else a line of the C library's or MPI's known last words."""
    for i, text in enumerate(lines):
        if text.startswith("Fatal Python error: "):
            # the line just before, past the engine's own log lines between them
            before = [t for t in lines[max(0, i - 3) : i] if t.strip() and not _LOG.match(t)]
            if before:
                return before[-1].strip()
    for text in lines:
        m = re.search(r"\*\*\* (MPI_ERR_\w+: .+)$", text)
        if m:
            return m.group(1).strip()
        if text.startswith(_LAST_WORDS):
            return text.strip()
    return ""
