"""Priority classes: the client's `--priority-header`, parsed safely and bounded by its tenant.

Classes run from PRIORITY_MIN (served first) to PRIORITY_MAX. A request without the header
gets its tenant's class (`priority:` in the `--api-keys` entry, default 0; 0 also without
tenants). The header may only lower a request's priority: a value below the tenant's class is
raised to it, one above PRIORITY_MAX is lowered to it. So no client can get ahead of its
tenant's traffic, and without tenants nobody can get ahead of the default class 0 — the header
only lets batch work step back. Anything but a short integer is a 400.
"""

from __future__ import annotations

from dpserve.gateway.admission.rejection import Rejection

PRIORITY_MIN = 0
PRIORITY_MAX = 9
# Longer values are refused before int() sees them (int() of thousands of digits is slow work).
_MAX_CHARS = 8


def request_priority(raw: str | None, header: str, tenant_class: int) -> int:
    """The class a request waits in: the header's value clamped to [tenant_class, PRIORITY_MAX]."""
    if raw is None:
        return tenant_class
    value = raw.strip()
    digits = value[1:] if value[:1] in "+-" else value
    if not digits or len(value) > _MAX_CHARS or not (digits.isascii() and digits.isdigit()):
        shown = raw if len(raw) <= 32 else raw[:32] + "…"
        raise Rejection(400, "invalid_priority", f"header {header} must be an integer priority class "
                        f"({PRIORITY_MIN}..{PRIORITY_MAX}, lower is served first), got {shown!r}")
    return min(PRIORITY_MAX, max(tenant_class, int(value)))
