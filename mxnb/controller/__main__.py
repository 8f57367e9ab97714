"""Run ipyparallel's controller with the arguments the kernel's launcher gives it."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from mxnb.protocol.ippimport import import_ipyparallel


class _NumpyLater:
    """NumPy, imported when first used.

    ipyparallel's task scheduler imports NumPy as the controller starts, for
    its "weighted" scheme alone; mxnb's ranks take cells through the direct
    interface, which never schedules a task.  That import was 0.12 s of the
    controller's CPU in a cold start whose cores are full (issue 18).
    """

    def __getattr__(self, name: str) -> Any:
        import numpy

        return getattr(numpy, name)


def import_controller() -> ModuleType:
    """ipyparallel's controller application, its scheduler's NumPy left for later."""
    if "numpy" in sys.modules:
        return import_ipyparallel("ipyparallel.controller.app")
    sys.modules["numpy"] = None  # type: ignore[assignment]  # an import of it fails meanwhile
    try:
        app = import_ipyparallel("ipyparallel.controller.app")
    finally:
        del sys.modules["numpy"]
    from ipyparallel.controller import task_scheduler

    if task_scheduler.numpy is None:
        task_scheduler.numpy = _NumpyLater()
    return app


if __name__ == "__main__":
    import_controller().main()
