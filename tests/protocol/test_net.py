"""Addresses and ports shared by kernel and ranks (pure units, real sockets)."""

from __future__ import annotations

import socket

from mxnb.protocol.net import (
    CONTROLLER_PORTS,
    LOOPBACK,
    RING_PORTS,
    address_towards,
    ephemeral_low,
    free_ports,
    free_range,
)


def test_the_ring_s_ports_come_from_below_the_system_s_own_range() -> None:
    """No port the system hands out meanwhile (the controller's, a connection's) can be one."""
    ports = free_ports(8)
    assert len(set(ports)) == 8 and all(1024 < p < ephemeral_low() for p in ports)


def test_a_port_in_use_is_passed_over() -> None:
    (port,) = free_ports(1, span=(20000, 32766))
    with socket.socket() as taken:
        taken.bind((LOOPBACK, port))
        assert free_ports(1, span=(port, port + 2)) == [port + 1]
        # nothing left below the system's range: the system picks
        (picked,) = free_ports(1, span=(port, port + 1))
        assert picked != port and picked >= ephemeral_low()


def test_ports_are_free_on_the_address_asked_for() -> None:
    """A rank on another host checks its own address, not the loopback."""
    (port,) = free_ports(1, span=(20000, 32766))
    with socket.socket() as elsewhere:  # taken on every address: not free on the loopback either
        elsewhere.bind(("0.0.0.0", port))
        assert free_ports(1, LOOPBACK, span=(port, port + 2)) == [port + 1]


def test_the_loopback_is_reached_through_the_loopback() -> None:
    assert address_towards(LOOPBACK) == LOOPBACK


def test_the_controller_s_pool_is_free_and_apart_from_the_ring_s() -> None:
    pool = free_range(32, [LOOPBACK])
    assert pool is not None and len(pool) == 32
    assert CONTROLLER_PORTS[0] <= pool[0] and pool[-1] < min(RING_PORTS[0], ephemeral_low())
    for port in pool:  # each binds, as the controller's sockets will
        with socket.socket() as s:
            s.bind((LOOPBACK, port))


def test_a_pool_is_never_one_with_a_port_in_use() -> None:
    pool = free_range(2, [LOOPBACK])
    assert pool is not None
    with socket.socket() as taken:
        taken.bind((LOOPBACK, pool[1]))
        taken.listen()
        # the span holds two pools of 2 that include it, and one that does not
        found = {free_range(2, [LOOPBACK], span=(pool[0], pool[0] + 4)) for _ in range(30)}
    assert found <= {range(pool[0] + 2, pool[0] + 4), None}
    assert free_range(2, [LOOPBACK], span=(pool[1], pool[1] + 1)) is None  # too narrow
