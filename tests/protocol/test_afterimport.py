"""Calling something once a module is imported: real imports of small modules."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from mxnb.protocol import afterimport
from mxnb.protocol.afterimport import when_imported


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """The name of a module not imported yet, which sets ``ready`` as it runs."""
    name = f"mxnb_late_{request.node.name}"
    (tmp_path / f"{name}.py").write_text("ready = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def finders() -> list[object]:
    return [f for f in sys.meta_path if type(f).__module__ == afterimport.__name__]


def test_the_call_comes_after_the_module_ran_and_the_finder_leaves(module: str) -> None:
    seen: list[ModuleType] = []
    when_imported(module, seen.append)
    assert seen == [] and len(finders()) == 1
    imported = __import__(module)
    assert seen == [imported] and imported.ready is True
    assert finders() == []
    # the loader is as it was: a reload runs the module without calling again
    assert "exec_module" not in vars(imported.__spec__.loader)
    import importlib

    importlib.reload(imported)
    assert seen == [imported]


def test_a_module_imported_already_is_called_at_once(module: str) -> None:
    imported = __import__(module)
    seen: list[ModuleType] = []
    cancel = when_imported(module, seen.append)
    assert seen == [imported] and finders() == []
    cancel()  # nothing waits: nothing to cancel


def test_several_calls_share_one_finder_and_a_cancelled_one_is_not_made(module: str) -> None:
    first: list[str] = []
    second: list[str] = []
    cancel = when_imported(module, lambda m: first.append(m.__name__))
    when_imported(module, lambda m: second.append(m.__name__))
    assert len(finders()) == 1
    cancel()
    __import__(module)
    assert (first, second) == ([], [module])


def test_cancelling_every_call_removes_the_finder(module: str) -> None:
    cancels = [when_imported(module, print), when_imported(module, print)]
    for cancel in cancels:
        cancel()
    assert finders() == []


def test_a_module_that_fails_to_import_is_not_called_and_its_loader_is_left_alone(
    tmp_path: Path, module: str
) -> None:
    (tmp_path / f"{module}.py").write_text("raise ValueError('broken')\n")
    seen: list[ModuleType] = []
    when_imported(module, seen.append)
    with pytest.raises(ValueError, match="broken"):
        __import__(module)
    assert seen == [] and finders() == []
