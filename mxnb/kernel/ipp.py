"""The parts of ipyparallel mxnb reads that it offers no public API for.

Kept in one module so that a new ipyparallel changes one file (and
:mod:`mxnb.protocol.ippimport`, how every process imports it, which the
ranks and the controller need too).  Each function falls back to something
harmless if the attribute is gone.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["launcher_output", "reply_metadata", "reply_payloads", "task_futures"]


def reply_metadata(ar: Any) -> list[dict[str, Any]]:
    """Each engine's metadata of an ``AsyncResult`` (output so far, status, error), in
    target order, as the client keeps it.

    The public ``metadata`` parses the dates in it with dateutil at every
    access where they are still text: eight dates for a cell on four ranks,
    about 2 ms of a 20 ms trivial cell (issue 18); mxnb reads no date.
    """
    raw = getattr(ar, "_metadata", None)
    return list(raw) if raw is not None else list(ar.metadata)


def task_futures(ar: Any) -> list[Any]:
    """One future per engine of an ``AsyncResult``, in target order.

    Each has ``done()`` (the reply arrived) and ``output`` (a future that
    resolves when the engine's output for the task is complete too); the
    public ``AsyncResult`` only says when *all* replies are in.
    """
    return list(ar._children)


def reply_payloads(child: Any) -> list[dict[str, Any]]:
    """The payloads (IPython's ``payload_manager``) of an engine's finished,
    successful execute reply; the client keeps them only in the reply's content."""
    if not child.done() or child.exception() is not None:
        return []
    content = getattr(child.result(), "_content", None) or {}
    return list(content.get("payload") or [])


def launcher_output(launcher: Any) -> str:
    """What a launcher's process wrote: its output file, or the text ipyparallel kept
    once it read and removed the file (after the job ended, when an event loop
    runs, as in a kernel)."""
    path = getattr(launcher, "output_file", "")
    if path and os.path.exists(path):
        with open(path, errors="replace") as f:
            return f.read()
    return getattr(launcher, "_output", None) or ""
