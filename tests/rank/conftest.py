"""Fixtures for the rank side's in-process tests (a group of size 1, no cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mxnb.rank import hooks


@pytest.fixture
def ophooks() -> Iterator[hooks.Hooks]:
    """MLX's ops wrapped for one test, and put back after it."""
    h = hooks.Hooks()
    h.install()
    yield h
    h.uninstall()
