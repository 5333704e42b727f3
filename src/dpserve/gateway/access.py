"""Who may call which gateway route: the four access classes and the one check the front applies.

- PUBLIC (/health, /readiness): anyone.
- TENANT (/v1/chat/completions, /v1/completions, /v1/models): anyone, or only holders of a tenant
  key when --api-keys is set (admission checks the key).
- OPERATOR (GET /workers, /get_loads, /metrics): the admin key when --admin-key is set, else anyone.
- ADMIN (POST /workers, DELETE /workers/{id}): the admin key when --admin-key is set; without it,
  clients on the gateway's own host (loopback peers) — and nobody when --api-keys is set.

Why ADMIN is closed without an admin key: a client that can add a worker receives other
tenants' requests, and one that can delete workers takes the service down. Loopback peers are
trusted only while there are no tenants: with --api-keys a local reverse proxy (whose connections
all come from 127.0.0.1) may be carrying tenants' traffic. `dpserve serve` passes its own random
`link_key` for the launcher's POST/DELETE /workers, so it works out of the box in every mode.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from dpserve.errors import HTTPError
from dpserve.gateway.admission.tenants import bearer_key


class Access(enum.Enum):
    PUBLIC = "public"
    TENANT = "tenant"
    OPERATOR = "operator"
    ADMIN = "admin"


# Module constants: an enum member looked up on its class costs ~0.1 µs, and this is per request.
_TENANT, _OPERATOR, _ADMIN = Access.TENANT, Access.OPERATOR, Access.ADMIN


class AccessPolicy:
    """`check(access, headers, from_loopback)` raises the 401/403 HTTPError, or returns."""

    def __init__(self, admin_key: str | None, link_key: str | None, has_tenants: bool,
                 authenticate_tenant: Callable[[Mapping[str, str]], None]) -> None:
        self._admin_key = admin_key
        self._keys = [k.encode() for k in (admin_key, link_key) if k]
        self._has_tenants = has_tenants
        self._authenticate_tenant = authenticate_tenant

    def check(self, access: Access, headers: Mapping[str, str], from_loopback: bool) -> None:
        if access is _TENANT:
            self._authenticate_tenant(headers)
        elif access is _OPERATOR:
            if self._admin_key is not None and not self._has_admin_key(headers):
                raise _missing_admin_key()
        elif access is _ADMIN:
            self._check_admin(headers, from_loopback)

    def _check_admin(self, headers: Mapping[str, str], from_loopback: bool) -> None:
        if self._has_admin_key(headers):
            return
        if self._admin_key is not None:
            raise _missing_admin_key()
        if self._has_tenants:
            raise HTTPError(403, "changing the workers needs an admin key when --api-keys is set: start the "
                                 "gateway with --admin-key and send Authorization: Bearer <admin key>",
                            code="admin_key_required")
        if not from_loopback:
            raise HTTPError(403, "without --admin-key, workers can be changed only from the gateway's own "
                                 "host (loopback)", code="admin_loopback_only")

    def _has_admin_key(self, headers: Mapping[str, str]) -> bool:
        given = bearer_key(headers)
        if given is None or not self._keys:
            return False
        token = given.encode()
        # Every key is compared (constant time each), so the time does not tell which one matched.
        return sum(hmac.compare_digest(token, key) for key in self._keys) > 0


def is_loopback_peer(peername: Any) -> bool:
    """Did this connection come from this host? (`peername` as asyncio gives it; IPv4-mapped IPv6
    addresses count by their IPv4 address.)"""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return False
    try:
        ip = ipaddress.ip_address(peername[0].split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def _missing_admin_key() -> HTTPError:
    return HTTPError(401, "this endpoint needs Authorization: Bearer <admin key>", code="invalid_admin_key")
