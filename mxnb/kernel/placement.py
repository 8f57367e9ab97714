"""Where the ranks run: this host, the hosts of a hostfile, or a Slurm allocation.

Open MPI's own launcher places the ranks (``mpiexec --hostfile``, or its
Slurm support inside an allocation); mxnb only works out what that implies
for itself before anything starts: the one address the controller and the
probes listen on (the interface that reaches the hosts, never every
interface), the subnet MPI's TCP transport may use, and errors that name
the host at fault while nothing runs yet.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mxnb.errors import ClusterError
from mxnb.protocol.net import LOOPBACK, address_towards, is_loopback, subnet_of

__all__ = ["Placement", "plan", "read_hostfile"]


@dataclass(frozen=True)
class Placement:
    """What mxnb needs to know about where Open MPI will put the ranks."""

    #: "this host", "hostfile FILE" or "Slurm job N": said in status and errors
    source: str
    #: the hosts, as the hostfile or the allocation names them
    hosts: tuple[str, ...] = ()
    #: the address the controller and the probes listen on
    ip: str = LOOPBACK
    #: this host's address on the route to the hosts (MPI's and Open MPI's subnet)
    route: str = LOOPBACK
    #: slots the hosts offer (None: as many as needed, on this host)
    slots: int | None = None
    hostfile: str = ""

    @property
    def spans_hosts(self) -> bool:
        return not is_loopback(self.route)

    @property
    def subnet(self) -> str:
        return subnet_of(self.route)


def read_hostfile(path: str) -> list[tuple[str, int]]:
    """(host, slots) per line of an Open MPI hostfile; slots default to 1."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ClusterError(f"cannot read the hostfile {path}: {e.strerror}") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        slots = 1
        for word in words[1:]:
            key, _, value = word.partition("=")
            if key == "slots":
                if not value.isdigit() or int(value) < 1:
                    raise ClusterError(
                        f"hostfile {path}, line {number}: slots must be a positive number, "
                        f"got {word!r}"
                    )
                slots = int(value)
        found.append((words[0], slots))
    if not found:
        raise ClusterError(f"the hostfile {path} lists no hosts; write one host per line")
    return found


def _resolve(host: str, where: str) -> str:
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError:
        known = _slurm_node_address(host) if where.startswith("Slurm") else ""
        if known:
            return known
        raise ClusterError(
            f"host {host} (from {where}) has no address: check its name, or write its IP "
            "address in the hostfile"
        ) from None


def _own_addresses() -> set[str]:
    import psutil

    return {
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET
    }


def _addresses(hosts: list[str], where: str, ip: str) -> tuple[str, str]:
    """(where to listen, this host's end of the route to the hosts).

    Listen where the route leaves unless ``ip`` says otherwise.
    """
    route = _route(hosts, where)
    if not ip:
        return route, route
    own = _own_addresses()
    if ip not in own:
        raise ClusterError(f"--ip {ip} is not an address of this host ({', '.join(sorted(own))})")
    return ip, route


def _route(hosts: list[str], where: str) -> str:
    """The address that reaches every host, as the routing table says."""
    addresses = {h: _resolve(h, where) for h in hosts}
    own = _own_addresses()
    remote = {h: a for h, a in addresses.items() if a not in own and not is_loopback(a)}
    if not remote:
        return LOOPBACK  # every host is this one
    towards = {h: address_towards(a) for h, a in remote.items()}
    chosen = set(towards.values())
    if len(chosen) > 1:
        ways = ", ".join(f"{h} via {a}" for h, a in sorted(towards.items()))
        raise ClusterError(
            f"the hosts are reached through different interfaces ({ways}); "
            "choose the one the ranks should connect to with --ip ADDRESS"
        )
    return chosen.pop()


def _scontrol(*args: str) -> str:
    """What Slurm's ``scontrol`` prints ("" where it is not installed)."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return ""
    out = subprocess.run(
        [scontrol, *args], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
    )
    return out.stdout


def _slurm_hosts() -> list[str]:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    if not nodelist:
        return []
    return _scontrol("show", "hostnames", nodelist).split() or nodelist.split(",")


def _slurm_node_address(node: str) -> str:
    """The address Slurm itself reaches ``node`` at (its NodeAddr), when DNS has none."""
    for word in _scontrol("show", "node", node).split():
        if word.startswith("NodeAddr="):
            return word.removeprefix("NodeAddr=")
    return ""


def _slurm_slots() -> int | None:
    """Tasks the allocation offers (``salloc -n``), else its CPUs, else unknown."""
    tasks = os.environ.get("SLURM_NTASKS") or os.environ.get("SLURM_NPROCS")
    if tasks and tasks.isdigit():
        return int(tasks)
    total = 0
    for part in os.environ.get("SLURM_JOB_CPUS_PER_NODE", "").split(","):
        count, _, times = part.partition("(x")
        if count.isdigit():
            total += int(count) * (int(times.rstrip(")")) if times else 1)
    return total or None


def plan(n: int, hostfile: str = "", ip: str = "") -> Placement:
    """Where ``n`` ranks will run, checked before anything starts."""
    if hostfile:
        listed = read_hostfile(hostfile)
        hosts = [h for h, _ in listed]
        slots = sum(s for _, s in listed)
        where = f"hostfile {hostfile}"
        if n > slots:
            raise ClusterError(
                f"{n} ranks do not fit the {slots} slots of {where}; use -n {slots} or "
                "add slots=N to its lines"
            )
        listen, route = _addresses(hosts, where, ip)
        return Placement(where, tuple(hosts), listen, route, slots, os.path.abspath(hostfile))
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        where = f"Slurm job {job}"
        hosts = _slurm_hosts()
        slots = _slurm_slots()
        if slots is not None and n > slots:
            raise ClusterError(
                f"{n} ranks do not fit {where}, which has {slots} tasks; use -n {slots} or "
                "ask Slurm for more (salloc -n N)"
            )
        listen, route = _addresses(hosts, where, ip)
        return Placement(where, tuple(hosts), listen, route, slots)
    return Placement("this host", (socket.gethostname(),), ip or LOOPBACK)
