"""How the kernel, the controller and the ranks import ipyparallel.

Importing ipyparallel defines its ``Cluster`` class, whose two launcher
traits list every installed launcher in their help text: four scans of every
installed package's entry points, as the class is defined, in every process
that imports any of ipyparallel (an engine too).  Each scan grows with the
packages installed; here the four took 0.048 s in one engine's import, and
a cold start runs six such processes on two cores (issue 18).  Nothing mxnb
starts ever shows that help, so the first import skips the listing.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys
from types import ModuleType
from typing import Any

__all__ = ["import_ipyparallel"]

#: ipyparallel's entry point groups: its launchers.
_GROUPS = "ipyparallel."


def import_ipyparallel(module: str = "ipyparallel") -> ModuleType:
    """``module`` of ipyparallel, imported without listing the installed launchers.

    Only the help text of a trait is left without the list, and only if its
    class is defined by this import; once imported, ipyparallel finds its
    launchers by entry point as before (it reads the list again each time).
    While the import runs, another thread asking for ipyparallel's entry
    points gets none.
    """
    if "ipyparallel" in sys.modules:  # imported already: nothing to save
        return importlib.import_module(module)
    real = metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if str(params.get("group", "")).startswith(_GROUPS):
            return metadata.EntryPoints(())
        return real(**params)

    metadata.entry_points = entry_points
    try:
        return importlib.import_module(module)
    finally:
        metadata.entry_points = real
        # ipyparallel's modules bind the function by name at import
        for name, mod in list(sys.modules.items()):
            bound = getattr(mod, "entry_points", None)
            if name.startswith("ipyparallel") and bound is entry_points:
                mod.entry_points = real
