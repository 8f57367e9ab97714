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
    "LOOPBACK",
    "RING_PORTS",
    "address_towards",
    "ephemeral_low",
    "free_ports",
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
