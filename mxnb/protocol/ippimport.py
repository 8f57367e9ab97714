"""How the kernel, the controller and the ranks import ipyparallel.

Importing ipyparallel defines its ``Cluster`` class, whose two launcher
traits list every installed launcher in their help text: four scans of every
installed package's entry points, as the class is defined, in every process
that imports any of ipyparallel (an engine too).  Each scan grows with the
packages installed; here the four took 0.048 s in one engine's import, and
a cold start runs six such processes on two cores (issue 18).  Nothing mxnb
starts ever shows that help, so the first import skips the listing.

ipyparallel's serializer also imports NumPy the first time it prepares any
message (its map of special types names ``numpy.ndarray``), though no
NumPy array can exist before NumPy is imported.  A rank that never uses
NumPy paid 0.12 s of CPU for it at its first cell, as each of a cold
start's four ranks does at once (issue 18).  So that entry of the map is
added when NumPy is imported, by whoever imports it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys
from types import ModuleType
from typing import Any

from mxnb.protocol.afterimport import when_imported

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
    imported = _without_listing(module)
    _numpy_when_imported()
    return imported


def _without_listing(module: str) -> ModuleType:
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


def _numpy_when_imported() -> None:
    """Leave the serializer's NumPy entry until NumPy is imported (module doc)."""
    from ipyparallel.serialize import canning

    canned = canning.can_map.pop("numpy.ndarray", None)
    if canned is None:  # not the map this was written for: leave it
        return

    def add(numpy: ModuleType) -> None:
        canning.can_map[numpy.ndarray] = canned

    when_imported("numpy", add)
