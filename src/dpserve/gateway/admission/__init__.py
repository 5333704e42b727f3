"""Admission control for the gateway (issue 5): capacity queue, SLO shedding, tenant quotas.

How the gateway uses it (the whole contract):

    admission = build_admission(config.admission, capacity_view)   # once, in the app factory
    await admission.start()                                         # on app startup
    ...
    ticket = await admission.admit(request.headers, AdmissionContext(prompt_chars, max_tokens))
    # admit() raises dpserve.errors.HTTPError: 401 (missing/unknown API key), 400 (bad priority
    # header), 429 (queue full, queue timeout, SLO shed, tenant over a limit; always with a
    # Retry-After header and a message naming the limit) or 503 (quota backend down, fail-closed).
    # Right after admit() returns, WITHOUT awaiting anything in between, pick a worker below its
    # cap and count the request in its in_flight: admission grants queue slots one at a time and
    # relies on the in_flight increment being visible before the next grant.
    try:
        ... proxy the request, stream the response ...
    finally:
        ticket.release(prompt_tokens, completion_tokens)   # exactly once, when the response ends
        # (also on error/disconnect; token counts None when unknown)
    ...
    admission.on_capacity_freed()   # whenever capacity may have grown: a worker's in_flight
                                    # fell, a worker was added or turned healthy
    admission.metrics_text()        # Prometheus lines to append to the gateway's /metrics
    await admission.stop()          # on app shutdown

`admission.worker_cap(weight)` is the in-flight cap for a worker (None = uncapped) and
`admission.worker_has_room(in_flight, weight)` applies it; the gateway's `has_capacity()` and its
worker selection use them so both sides agree on what "below its cap" means.
"""

from __future__ import annotations

from dpserve.gateway.admission.config import AdmissionConfig
from dpserve.gateway.admission.contract import AdmissionContext, CapacityView, WorkerLoad
from dpserve.gateway.admission.controller import Admission, build_admission
from dpserve.gateway.admission.ticket import Ticket

__all__ = [
    "Admission",
    "AdmissionConfig",
    "AdmissionContext",
    "CapacityView",
    "Ticket",
    "WorkerLoad",
    "build_admission",
]
