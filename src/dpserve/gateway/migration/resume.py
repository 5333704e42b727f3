"""The migration loop: a response cut after its first byte continues on other replicas until it is
complete or `retry.decide_break` ends it."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from dpserve.gateway.attempt import ProxiedRequest, TryFailure
from dpserve.gateway.migration.job import StreamBreak
from dpserve.gateway.policies.base import RouteRequest
from dpserve.gateway.retry import BreakDecision, break_decision
from dpserve.gateway.usage import Usage
from dpserve.http_names import WORKER_HEADER

# Sends a request to a replica not yet tried, retrying before its first byte (the proxy's loop):
# None once the answer reached the client, a StreamBreak, or the last failure (`no_worker`: none).
TryWorkers = Callable[[ProxiedRequest], Awaitable["TryFailure | StreamBreak | None"]]


async def resume(request: ProxiedRequest, brk: StreamBreak, usage: Usage, past_deadline: Callable[[], bool],
                 try_workers: TryWorkers, no_worker: TryFailure) -> TryFailure | None:
    """Continue `request` after `brk`; a TryFailure only for a non-streaming client (nothing was
    sent to it yet)."""
    job = request.job
    assert job is not None
    try:
        while (verdict := job.on_break(brk, past_deadline())).action == "migrate":
            cont = job.continuation()
            if isinstance(cont, str):  # nothing to resume from: the outcome says why
                job.count(brk.reason, cont)
                verdict = BreakDecision("error", cont)
                break
            job.begin_stream(cont)
            route = RouteRequest(cont.route_text, request.parsed.route.session_key, cont.path)
            follow = dataclasses.replace(request, path=cont.path, body=cont.body,
                                         parsed=dataclasses.replace(request.parsed, route=route))
            result = await try_workers(follow)
            if not isinstance(result, StreamBreak):
                if result is not None:
                    verdict = BreakDecision("error", "no_replica" if result is no_worker else "failed")
                    job.count(brk.reason, verdict.outcome)
                    break
                return None
            brk = result
        error = await job.end(verdict, brk, request.sink, {WORKER_HEADER: brk.worker.id})
        return None if error is None else TryFailure(error, break_decision(brk.reason))
    except ConnectionResetError:  # the client went away: nothing more to do for it
        return None
    finally:
        usage.prompt_tokens, usage.completion_tokens = job.usage_counts()
