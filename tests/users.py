"""A user other than root, for tests of what a non-root user meets (Binder, shared machines)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

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
