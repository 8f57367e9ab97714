"""Run something once a module has been imported, whoever imports it.

A rank needs NumPy only once NumPy is used: a cell that uses it, or a trace
being read.  Importing it at start-up cost each rank 0.12 s of CPU, paid by
all of a cold start's ranks at once on the same cores (issue 18).  What
mxnb and ipyparallel must do *to* NumPy (wrap its converters, know its array
type) can wait for that import, which is what :func:`when_imported` is for.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["when_imported"]

Then = Callable[[ModuleType], None]


def when_imported(name: str, then: Then) -> Callable[[], None]:
    """Call ``then(module)`` once the top-level module ``name`` is imported:
    now, if it is already; else right after it executes, inside that import,
    before any ``import`` statement of it returns.  Returns a function that
    cancels a call still waiting.
    """
    module = sys.modules.get(name)
    if module is not None:
        then(module)
        return _nothing
    finder = _waiting.get(name)
    if finder is None:
        finder = _waiting[name] = _AfterImport(name)
        sys.meta_path.insert(0, finder)
    finder.calls.append(then)
    return lambda: finder.cancel(then)


def _nothing() -> None:
    return None


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the finders after it for the module's spec,
    wraps that loader's ``exec_module``, and leaves ``sys.meta_path``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Then] = []

    def cancel(self, then: Then) -> None:
        if then in self.calls:
            self.calls.remove(then)
        if not self.calls:
            self._leave()

    def _leave(self) -> None:
        if _waiting.get(self.name) is self:
            del _waiting[self.name]
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        self._leave()  # first: the search below must not come back here
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # nothing to follow: the import goes on as if unwatched
        run, calls = loader.exec_module, self.calls

        def exec_module(module: ModuleType) -> None:
            del loader.exec_module  # once: the loader is as it was
            run(module)
            for then in calls:
                then(module)

        loader.exec_module = exec_module
        return spec


#: The finders waiting, by module name: one per module.
_waiting: dict[str, _AfterImport] = {}
