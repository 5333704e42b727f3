"""The gateway's route table: every path it answers, with its method, handler and who may call it.

Adding a route is one line in `ROUTES` (a handler is `async def h(gw, request, sink)`, answering
through the sink, raising `HTTPError` for errors). The front (front.py) matches every request
here: an unknown path is a JSON 404, a known path with another method a JSON 405 with `Allow`,
and `HEAD` is answered for every `GET` route (its head, without the body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from dpserve.errors import HTTPError
from dpserve.gateway import handlers as h
from dpserve.gateway.access import Access
from dpserve.gateway.exchange import ResponseSink
from dpserve.http_names import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    DASHBOARD_DATA_PATH,
    DASHBOARD_PATH,
    HEALTH_PATH,
    LOADS_PATH,
    METRICS_PATH,
    MODELS_PATH,
    READINESS_PATH,
    WORKERS_PATH,
)

if TYPE_CHECKING:
    from dpserve.gateway.app import Gateway


class Request:
    """One request as a handler sees it. `headers` is case-insensitive; `params` holds the path's
    `{name}` segments; `from_loopback` says whether the client connected from this host."""

    __slots__ = ("body", "from_loopback", "headers", "method", "params", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
                 from_loopback: bool, params: Mapping[str, str] | None = None) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.from_loopback = from_loopback
        self.params: Mapping[str, str] = params or {}


Handler = Callable[["Gateway", Request, ResponseSink], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """`path` is exact, or ends in one `{name}` segment (`/workers/{worker_id}`)."""

    method: str
    path: str
    handler: Handler
    access: Access


ROUTES: tuple[Route, ...] = (
    Route("POST", CHAT_PATH, h.proxied, Access.TENANT),
    Route("POST", COMPLETIONS_PATH, h.proxied, Access.TENANT),
    Route("GET", MODELS_PATH, h.models, Access.TENANT),
    Route("GET", HEALTH_PATH, h.health, Access.PUBLIC),
    Route("GET", READINESS_PATH, h.readiness, Access.PUBLIC),
    Route("GET", WORKERS_PATH, h.list_workers, Access.OPERATOR),
    Route("POST", WORKERS_PATH, h.add_worker, Access.ADMIN),
    Route("DELETE", WORKERS_PATH + "/{worker_id}", h.remove_worker, Access.ADMIN),
    Route("GET", LOADS_PATH, h.get_loads, Access.OPERATOR),
    Route("GET", METRICS_PATH, h.metrics, Access.OPERATOR),
    # The page holds no fleet data (it asks for the admin key itself); its data is an operator's.
    Route("GET", DASHBOARD_PATH, h.dashboard_page, Access.PUBLIC),
    Route("GET", DASHBOARD_DATA_PATH, h.dashboard_data, Access.OPERATOR),
)


@dataclass
class RouteTable:
    """Matching: exact paths by dict lookup (the proxied routes pay one lookup), then the few
    `{name}` routes by prefix."""

    routes: tuple[Route, ...] = ROUTES
    _exact: dict[str, dict[str, Route]] = field(default_factory=dict, init=False)
    _prefixed: list[tuple[str, str, Route]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for route in self.routes:
            head, brace, rest = route.path.partition("{")
            if not brace:
                self._exact.setdefault(route.path, {})[route.method] = route
            else:
                assert head.endswith("/") and rest.endswith("}") and "/" not in rest, route.path
                self._prefixed.append((head, rest[:-1], route))

    def match(self, method: str, path: str) -> tuple[Route, Mapping[str, str] | None]:
        """The route and its path parameters; HTTPError 404 (no such path) or 405 (other method)."""
        by_method = self._exact.get(path)
        params: dict[str, str] | None = None
        if by_method is None:
            by_method, params = self._match_prefixed(path)
        route = by_method.get(method) or (by_method.get("GET") if method == "HEAD" else None)
        if route is not None:
            return route, params
        if not by_method:
            raise HTTPError(404, f"no route {method} {path}", code="unknown_route")
        allowed = sorted({*by_method, *(("HEAD",) if "GET" in by_method else ())})
        raise HTTPError(405, f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                        code="method_not_allowed", headers={"Allow": ", ".join(allowed)})

    def _match_prefixed(self, path: str) -> tuple[dict[str, Route], dict[str, str] | None]:
        found: dict[str, Route] = {}
        params: dict[str, str] | None = None
        for head, name, route in self._prefixed:
            value = path[len(head):]
            if path.startswith(head) and value and "/" not in value:
                found[route.method] = route
                params = {name: unquote(value)}
        return found, params
