"""Which of this machine's addresses reaches another: shared by kernel and ranks.

Sockets listen on one address only, never on every interface: the loopback
when the peer is this host, else the address of the interface the route to
the peer leaves by.  Asking the routing table through a connected UDP socket
sends nothing.
"""

from __future__ import annotations

import ipaddress
import random
import socket

import psutil

__all__ = [
    "CONTROLLER_PORTS",
    "LOOPBACK",
    "RING_PORTS",
    "address_towards",
    "ephemeral_low",
    "free_ports",
    "free_range",
    "is_loopback",
    "subnet_of",
]

LOOPBACK = "127.0.0.1"


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


def address_towards(peer: str) -> str:
    """This host's IPv4 address on the route to ``peer`` (an address)."""
    if is_loopback(peer):
        return LOOPBACK
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))  # UDP: no packet leaves
        return str(s.getsockname()[0])


def subnet_of(ip: str) -> str:
    """The CIDR subnet of the interface holding ``ip`` (for Open MPI's if_include)."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and a.address == ip and a.netmask:
                return str(ipaddress.ip_network(f"{ip}/{a.netmask}", strict=False))
    return f"{ip}/32"


#: Where MLX's ring's ports are drawn from: below the ports the system hands out itself.
RING_PORTS = (20000, 32768)
#: Where ipyparallel's controller's ports are drawn from: below the ring's, for the
#: same reason (:func:`free_range`).
CONTROLLER_PORTS = (10000, 20000)


def free_ports(n: int, host: str = LOOPBACK, span: tuple[int, int] = RING_PORTS) -> list[int]:
    """``n`` distinct ports on ``host``, free now and held together while chosen.

    They are released before MLX's ring binds them, while the controller and
    the ranks' other sockets take ports of their own.  A port the system
    picked (``bind`` to port 0, or an outgoing connection) could be one of
    them again, and a ring whose rank is answered by another program never
    forms.  The system picks only from its ephemeral range, so these ports
    come from below it.
    """
    low, high = span[0], min(span[1], ephemeral_low())
    candidates = random.sample(range(low, high), min(high - low, 64 * n)) if high > low else []
    held: list[socket.socket] = []
    try:
        for port in candidates:
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                break
        while len(held) < n:  # no room below the ephemeral range: let the system pick
            s = socket.socket()
            held.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def ephemeral_low() -> int:
    """The lowest port the system picks by itself (Linux; 49152 elsewhere, as on macOS)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_range(n: int, hosts: list[str], span: tuple[int, int] = CONTROLLER_PORTS) -> range | None:
    """``n`` consecutive ports free now on each of ``hosts``; None if 20 tries found none.

    ipyparallel's controller takes its ports as one pool.  Left alone, it picks
    each by binding to port 0 and letting go, and the process that needs it
    binds it later: meanwhile the system can hand it to another bind to port 0
    or to an outgoing connection (Open MPI's daemons, the ranks, the kernel's
    own client), and the controller's relay that wanted it ends
    (:mod:`mxnb.kernel.relay`).  From below the system's range, only a process
    asking for a port by number can take one.
    """
    low, high = span[0], min(span[1], ephemeral_low())
    for _ in range(20 if high - low >= n else 0):
        first = random.randrange(low, high - n + 1)
        if all(_free(host, port) for port in range(first, first + n) for host in hosts):
            return range(first, first + n)
    return None


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # as the controller's sockets bind: a port left in TIME_WAIT is free to them
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
