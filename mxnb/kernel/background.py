"""Start the ranks while the user reads, so the first cell finds them ready.

A cold start costs one to two seconds of imports and registration on every
rank; nothing of it depends on the user's first cell except the number of
ranks.  The **Python 3 (mxnb)** kernel sets ``MXNB_PRESTART`` (default size
4), and loading the extension then starts that many ranks in a thread.  The
first ``%%mxdist`` cell (or ``%mxdist`` line) waits for that start instead of
beginning its own.

The thread is not a daemon: an interpreter that exits while it runs waits
for it, and then the cluster's own ``atexit`` stop runs, so a start that was
cut short by the kernel's shutdown leaves no processes behind.
"""

from __future__ import annotations

import os
import threading

from mxnb.kernel.cluster import MxCluster

__all__ = ["BackgroundStart", "prestart_size"]

#: Environment variable: number of ranks to start when the extension loads.
PRESTART_ENV = "MXNB_PRESTART"


def prestart_size(environ: dict[str, str] | None = None) -> int | None:
    """The size ``MXNB_PRESTART`` asks for, or None (unset, empty, ``0`` or ``no``)."""
    value = (environ if environ is not None else os.environ).get(PRESTART_ENV, "").strip()
    if value.lower() in ("", "0", "no", "false", "off"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(
            f"{PRESTART_ENV}={value!r}: expected a number of ranks (e.g. 4), or 0 to turn it off"
        ) from None
    if n < 1:
        raise ValueError(f"{PRESTART_ENV}={value!r}: expected a positive number of ranks")
    return n


class BackgroundStart:
    """One cluster start running in a thread."""

    def __init__(self, cluster: MxCluster) -> None:
        self.cluster = cluster
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mxnb-prestart")
        self._thread.start()

    def _run(self) -> None:
        try:
            self.cluster.start()
        except BaseException as e:  # handed to whoever joins
            self.error = e

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> MxCluster:
        """Wait for the start to end; re-raises its error."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.cluster
