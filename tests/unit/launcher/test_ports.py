"""Port reservations: distinct, exclusive between allocators, still bindable by the replica."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dpserve.launcher.ports import PortAllocator


def test_reserved_ports_are_distinct(tmp_path: Path) -> None:
    alloc = PortAllocator("127.0.0.1", tmp_path)
    try:
        ports = [alloc.reserve() for _ in range(8)]
        assert len(set(ports)) == 8
    finally:
        alloc.release_all()


def test_the_replica_can_listen_on_its_reserved_port_but_others_cannot_bind(tmp_path: Path) -> None:
    alloc = PortAllocator("127.0.0.1", tmp_path)
    port = alloc.reserve()
    try:
        with socket.create_server(("127.0.0.1", port)):  # SO_REUSEADDR, like the replicas' servers
            pass
        plain = socket.socket()
        try:
            plain.bind(("127.0.0.1", port))
            bound = True
        except OSError:
            bound = False
        finally:
            plain.close()
        assert not bound
    finally:
        alloc.release_all()


def test_a_second_allocator_skips_a_port_the_first_holds(tmp_path: Path) -> None:
    first, second = PortAllocator("127.0.0.1", tmp_path), PortAllocator("127.0.0.1", tmp_path)
    port = first.reserve()
    first._held[port][0].close()  # only the lock protects it now (as between replica restarts)
    try:
        assert second._try_lock(port) is None
        first.release(port)
        fd = second._try_lock(port)
        assert fd is not None
        os.close(fd)
    finally:
        first.release_all()
        second.release_all()
