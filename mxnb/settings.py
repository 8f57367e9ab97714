"""Session-wide defaults of ``%%mxdist``, in one place.

Change them for a session with the line magic (``%mxdist --timeout 60``,
``%mxdist --no-check``) or for one cell with the same flags on ``%%mxdist``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxnb.cluster import DEFAULT_NP


@dataclass
class Settings:
    #: Ranks started when no cluster runs and no -n is given.
    np: int = DEFAULT_NP
    #: Seconds a cell may run before control returns with a per-rank report.
    #: None: no limit; hangs are still caught by stall detection, and the stop
    #: button always works.
    timeout: float | None = None
    #: Checked communication: ranks agree on op, shape and dtype before data moves.
    checked: bool = True
    #: Seconds a rank must wait on peers that cannot come before mxnb calls it a hang.
    stall_grace: float = 2.0
