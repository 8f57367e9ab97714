"""The trace of one cell: every rank's ops merged into steps, and how they read.

:mod:`.merge` builds the :class:`Trace` from the ranks' reports; :mod:`.text`
words its values and times.  Views render it; nothing here draws.
"""

from mxnb.trace.merge import Step, Trace, Transfer

__all__ = ["Step", "Trace", "Transfer"]
