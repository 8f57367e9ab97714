"""Golden files: the exact text a user reads, kept under ``tests/golden/`` and reviewed in diffs.

A wording change then shows up in a pull request as a change to a ``.txt``
file that reads like the notebook output, instead of as an edited string
buried in an assertion.  The text is stored exactly as produced (ANSI colour
codes included): the inputs of every case are made by hand and fixed, so
nothing varies from run to run and nothing needs to be normalised away.

Regenerate after an intended change, then read the diff::

    MXNB_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

__all__ = ["GOLDEN_DIR", "UPDATE_VAR", "check_golden"]

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_VAR = "MXNB_UPDATE_GOLDEN"
UPDATE_COMMAND = f"{UPDATE_VAR}=1 pytest tests/test_golden.py"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# Shown escaped in a failure, so a colour code reads as text instead of
# colouring the terminal; the file itself keeps the real characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _lines(text: str) -> list[str]:
    """Lines for the diff: split on ``\n`` only, so a stray ``\r`` or a missing
    final newline shows up as a difference instead of vanishing."""
    return [_CONTROL.sub(lambda m: repr(m.group())[1:-1], ln) + "\n" for ln in text.split("\n")]


def check_golden(name: str, text: str) -> None:
    """Fail with a unified diff unless ``text`` is exactly ``tests/golden/<name>.txt``.

    The file holds ``text`` plus one final newline, so that every golden file
    ends like a text file and diffs stay clean; newlines are never translated,
    so ``\\r`` would be kept too.  With ``MXNB_UPDATE_GOLDEN=1`` the file is
    (re)written instead and the check passes.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"golden name {name!r}: use lower-case letters, digits, '-' and '_'")
    path = GOLDEN_DIR / f"{name}.txt"
    stored = text + "\n"
    if os.environ.get(UPDATE_VAR) == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(stored)
        return
    if not path.exists():
        pytest.fail(
            f"no golden file {path.relative_to(GOLDEN_DIR.parent.parent)}; create it with "
            f"`{UPDATE_COMMAND}`, then read it before committing it",
            pytrace=False,
        )
    with path.open(encoding="utf-8", newline="") as f:
        expected = f.read()
    if expected == stored:
        return
    diff = difflib.unified_diff(
        _lines(expected),
        _lines(stored),
        fromfile=f"tests/golden/{name}.txt (expected)",
        tofile=f"{name} (actual)",
    )
    pytest.fail(
        f"text differs from tests/golden/{name}.txt:\n{''.join(diff)}"
        f"If the change is intended, run `{UPDATE_COMMAND}` and review the diff.",
        pytrace=False,
    )
