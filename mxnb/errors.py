"""Errors that mxnb shows to a notebook user as a short message, not a stack.

IPython calls ``_render_traceback_`` when it exists, so these exceptions show
what went wrong and what to do, without mxnb's internals.  A failing cell
still fails (``Run All`` stops, nbclient reports it).
"""

from __future__ import annotations


class MxnbError(Exception):
    """Base class: the message is the whole story."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]
