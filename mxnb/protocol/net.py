"""Which of this machine's addresses reaches another: shared by kernel and ranks.

Sockets listen on one address only, never on every interface: the loopback
when the peer is this host, else the address of the interface the route to
the peer leaves by.  Asking the routing table through a connected UDP socket
sends nothing.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

__all__ = ["LOOPBACK", "address_towards", "is_loopback", "subnet_of"]

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
