"""A user other than root, for tests of what a non-root user meets (Binder, shared machines)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: The system user made for these tests when they run as root.
USER = "mxnb-binder"


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def non_root_user() -> tuple[list[str], pwd.struct_passwd]:
    """The command prefix that runs as a non-root user, and that user."""
    if os.geteuid() != 0:
        return [], pwd.getpwuid(os.geteuid())
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            [_sbin("useradd"), "--system", "--no-create-home", "--shell", "/bin/sh", USER],
            check=True,
        )
    return [_sbin("runuser"), "-u", USER, "--"], pwd.getpwnam(USER)


@contextmanager
def reachable_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory that user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_as(
    prefix: list[str], env: dict[str, str], cmd: list[str], cwd: Path | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``cmd`` as that user, with ``env`` and nothing else of ours."""
    return subprocess.run(
        [*prefix, "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python_for(prefix: list[str], env: dict[str, str], check: str, cwd: Path | None) -> str:
    """A Python that user can run and that passes ``check``: this one may sit where
    the user cannot reach (pyenv's under /root), the system's of its version not."""
    version = "python{}.{}".format(*sys.version_info[:2])
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), f"/usr/bin/{version}"]
    candidates += ["/usr/bin/python3", shutil.which(version) or "", shutil.which("python3") or ""]
    for exe in dict.fromkeys(c for c in candidates if c):
        if run_as(prefix, env, [exe, "-c", check], cwd, 60).returncode == 0:
            return exe
    pytest.fail(f"no Python that passes {check!r} which {env.get('USER', 'the user')} "
                f"may run among {candidates}")  # fmt: skip
