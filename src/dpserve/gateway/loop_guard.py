"""What keeps a request from looping through gateways: the hop count, and no worker URL that is us.

A gateway added as its own worker relayed each request to itself until the process ran out of
file descriptors (20,000 connections for one request). Two guards: `POST /workers` and
`--worker-urls` refuse a URL that reaches one of this gateway's listening sockets
(`points_at`), and every proxied request carries `x-dpserve-hops`, raised by one on each pass, so
a loop through other gateways (or through an address we cannot recognise, such as a port
forward) ends with a 508 after `MAX_HOPS` passes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from dpserve.errors import HTTPError
from dpserve.http_names import HOPS_HEADER

# Gateways a request may pass through: a gateway in front of gateways is legitimate, a chain
# longer than this is a loop.
MAX_HOPS = 4

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def hop_count(headers: Mapping[str, str]) -> int:
    """The gateways this request has passed through already; 508 past MAX_HOPS, 400 if malformed."""
    value = headers.get(HOPS_HEADER)
    if value is None:
        return 0
    value = value.strip()
    if not value.isdigit() or len(value) > 3:
        raise HTTPError(400, f"{HOPS_HEADER} must be a small non-negative integer", param=HOPS_HEADER)
    hops = int(value)
    if hops >= MAX_HOPS:
        raise HTTPError(508, f"the request has passed through {hops} gateways: a worker URL loops back "
                             "to a gateway", code="loop_detected")
    return hops


def _address(host: str) -> Address | None:
    """The IP address `host` spells, IPv4-mapped IPv6 addresses as their IPv4 address; None for a name."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _same_machine(ip: Address) -> bool:
    """Is `ip` one of this host's addresses? Loopback and the wildcard are; otherwise try to bind
    to it (no packet is sent)."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def _reaches(ip: Address, port: int, listening: Iterable[tuple[str, int]]) -> bool:
    for host, listen_port in listening:
        if port != listen_port:
            continue
        bound = _address(host)
        if bound is None:
            continue
        if bound.is_unspecified:  # listening on every address of this host
            if _same_machine(ip):
                return True
        elif ip == bound or (ip.is_unspecified and bound.is_loopback):  # 0.0.0.0 connects to loopback
            return True
    return False


async def points_at(url: str, listening: Iterable[tuple[str, int]]) -> bool:
    """Does the worker URL (checked by `check_worker_url`) reach one of the `listening` (host, port)
    sockets? Every address its host name resolves to is compared."""
    parts = urlsplit(url)
    port = parts.port or 80
    host = parts.hostname or ""
    ip = _address(host)
    if ip is not None:
        candidates: list[Address] = [ip]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return False  # does not resolve now: it cannot be us; health checks will say it is down
        candidates = [a for a in (_address(str(info[4][0])) for info in infos) if a is not None]
    listening = list(listening)
    return any(_reaches(a, port, listening) for a in candidates)
