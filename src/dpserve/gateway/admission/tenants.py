"""Tenants and API keys: the `--api-keys` file, and who a request belongs to (401 otherwise).

File format (YAML):

    keys:
      - key: sk-team-a-1          # the bearer token clients send
        tenant: team-a            # limits belong to the tenant; its keys share them
        requests_per_minute: 600  # each limit is optional
        tokens_per_minute: 200000 # prompt + completion tokens
        max_concurrency: 16
        priority: 0               # queue class 0..9 (lower first); clients may only lower it
      - key: sk-team-b
        tenant: team-b
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dpserve.config import ConfigError
from dpserve.gateway.admission.priority import PRIORITY_MAX, PRIORITY_MIN
from dpserve.gateway.admission.rejection import Rejection

LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "max_concurrency")
_ENTRY_KEYS = {"key", "tenant", "priority", *LIMIT_NAMES}
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class TenantLimits:
    """Per-tenant limits; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrency: int | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, n) is not None for n in LIMIT_NAMES)


@dataclass(frozen=True)
class Tenant:
    """A tenant: its limits and its queue priority class (the best its requests may ask for)."""

    name: str
    limits: TenantLimits = TenantLimits()
    priority: int = PRIORITY_MIN


def _digest(key: str) -> bytes:
    # Keys are looked up by hash so that the lookup time does not depend on how much of a guess matches.
    return hashlib.sha256(key.encode()).digest()


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>` (header name case-insensitive), or None."""
    value = headers.get("Authorization") or headers.get("authorization")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class KeyRing:
    """API key → tenant. Built once from the key file; lookups never touch the disk."""

    def __init__(self, tenants_by_key: Mapping[str, Tenant]) -> None:
        self._by_digest = {_digest(k): t for k, t in tenants_by_key.items()}
        self.tenants: tuple[Tenant, ...] = tuple({t.name: t for t in tenants_by_key.values()}.values())

    def identify(self, headers: Mapping[str, str]) -> Tenant:
        """The request's tenant; Rejection 401 when the key is missing or unknown."""
        key = bearer_key(headers)
        if key is None:
            raise Rejection(401, "missing_api_key",
                            "missing API key: send it as 'Authorization: Bearer <key>'")
        tenant = self._by_digest.get(_digest(key))
        if tenant is None:
            raise Rejection(401, "invalid_api_key", "invalid API key")
        return tenant


def load_key_file(path: Path) -> KeyRing:
    """Parse and validate an `--api-keys` file; ConfigError naming the file and entry otherwise."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --api-keys file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--api-keys file {path} is not valid YAML: {exc}") from exc
    entries = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"--api-keys file {path} must have a non-empty 'keys:' list")
    by_key: dict[str, Tenant] = {}
    tenant_of: dict[str, Tenant] = {}
    for index, entry in enumerate(entries):
        where = f"--api-keys file {path}, keys[{index}]"
        key, tenant = _parse_entry(entry, where)
        if key in by_key:
            raise ConfigError(f"{where}: duplicate key")
        if tenant.name in tenant_of and tenant_of[tenant.name] != tenant:
            raise ConfigError(f"{where}: tenant {tenant.name!r} is listed with different limits or priority")
        tenant_of[tenant.name] = tenant
        by_key[key] = tenant
    return KeyRing(by_key)


def _parse_entry(entry: Any, where: str) -> tuple[str, Tenant]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with 'key' and 'tenant'")
    unknown = sorted(set(map(str, entry)) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted(_ENTRY_KEYS))}")
    key, name = entry.get("key"), entry.get("tenant")
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{where}: 'key' must be a non-empty string")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'tenant' must be a non-empty string")
    limits = {}
    for limit in LIMIT_NAMES:
        value = entry.get(limit)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{where}: {limit} must be a positive integer, got {value!r}")
        limits[limit] = value
    priority = entry.get("priority", PRIORITY_MIN)
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
            PRIORITY_MIN <= priority <= PRIORITY_MAX):
        raise ConfigError(f"{where}: priority must be an integer {PRIORITY_MIN}..{PRIORITY_MAX}, "
                          f"got {priority!r}")
    return key.strip(), Tenant(name.strip(), TenantLimits(**limits), priority)
