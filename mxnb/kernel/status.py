"""What ``%mxdist status`` says about a running cluster."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterStatus"]


@dataclass(frozen=True)
class ClusterStatus:
    """What ``%mxdist status`` reports."""

    running: bool
    n: int
    backend: str = "mpi"
    mpi_library: str = ""
    mlx_version: str = ""
    hosts: tuple[str, ...] = ()  # each rank's, in rank order
    placed_by: str = "this host"
    uptime: float = 0.0
    profile_dir: str = ""

    def __str__(self) -> str:
        if not self.running:
            return "mxdist: no cluster running"
        from mxnb.protocol.wording import hosts_text

        hosts = hosts_text(dict(enumerate(self.hosts)))
        placed = "" if self.placed_by == "this host" else f"  placed by: {self.placed_by}\n"
        return (
            f"mxdist: {self.n} ranks, backend {self.backend}, mlx {self.mlx_version}\n"
            f"  MPI library: {self.mpi_library}\n"
            f"  hosts: {hosts}\n{placed}"
            f"  uptime: {self.uptime:.0f} s\n"
            f"  profile: {self.profile_dir}"
        )
