"""The gateway's route handlers (routes.py lists them): `async def handler(gw, request, sink)`.

Each answers through the sink or raises `HTTPError`; the front turns that, and any other
exception, into the JSON error shape. Access (keys, loopback) was checked before the call.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from dpserve.errors import HTTPError
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.kv_events.endpoint import endpoint_from_json
from dpserve.gateway.worker import check_worker_url, check_worker_weight, replica_origin
from dpserve.json_body import load_json

if TYPE_CHECKING:
    from dpserve.gateway.app import Gateway
    from dpserve.gateway.routes import Request

JSON = {"Content-Type": "application/json"}
_LOAD_FIELDS = ("id", "url", "in_flight", "running", "waiting", "kv_cache_usage", "load", "weight")


async def send_json(sink: ResponseSink, body: Any, status: int = 200) -> None:
    await sink.whole(status, JSON, orjson.dumps(body))


def proxied(gw: Gateway, request: Request, sink: ResponseSink) -> Awaitable[None]:
    # The proxy's coroutine itself, not one wrapped in another: this is every proxied request's path.
    return gw.proxy.handle(request.path, request.headers, request.body, sink)


async def models(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    await send_json(sink, {"object": "list", "data": await gw.model_list()})


async def health(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    await send_json(sink, {"status": "ok"})


async def readiness(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    if not gw.registry.any_ready():
        raise HTTPError(503, "no healthy replica", code="no_healthy_worker")
    await send_json(sink, {"status": "ready"})


async def list_workers(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    await send_json(sink, [w.to_json() for w in gw.registry.all()])


async def add_worker(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    body = load_json(request.body)
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        raise HTTPError(400, "'url' is required: the replica's base URL, http://host:port", param="url")
    try:
        url = check_worker_url(url)
    except ValueError as exc:
        raise HTTPError(400, f"'url': {exc}", param="url") from exc
    try:
        weight = check_worker_weight(body.get("weight", 1.0))
    except ValueError as exc:
        raise HTTPError(400, f"'weight': {exc}", param="weight") from exc
    kv_events = None
    if body.get("kv_events") is not None:
        try:
            kv_events = endpoint_from_json(body["kv_events"])
        except ValueError as exc:
            raise HTTPError(400, f"'kv_events': {exc}", param="kv_events") from exc
    worker = await gw.add_worker(url, weight, kv_events, replica_origin(body))
    await send_json(sink, worker.to_json(), status=201)


async def remove_worker(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    worker_id = request.params["worker_id"]
    worker = gw.registry.get(worker_id)
    if worker is None:
        raise HTTPError(404, f"no worker {worker_id!r}", code="unknown_worker")
    await gw.remove_worker(worker)
    await sink.whole(204, {}, b"")


async def get_loads(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    await send_json(sink, {"workers": [{k: v for k, v in w.to_json().items() if k in _LOAD_FIELDS}
                                       for w in gw.registry.all()]})


async def metrics(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    gauges = {**gw.policy.gauges(), **(gw.kv_feed.gauges() if gw.kv_feed is not None else {})}
    text = gw.metrics.render(gw.registry.all(), gauges) + gw.admission.metrics_text()
    await sink.whole(200, {"Content-Type": "text/plain; charset=utf-8"}, text.encode())


async def dashboard_page(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    page = gw.dashboard.page()
    await sink.whole(200, dict(page.headers), page.body)


async def dashboard_data(gw: Gateway, request: Request, sink: ResponseSink) -> None:
    query = {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
    await send_json(sink, gw.dashboard.data(query))
