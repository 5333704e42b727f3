"""CPU per request of the gateway's front alone (gateway/front.py), no sockets, no proxy.

Feeds a typical openai-client chat request to one `FrontProtocol` over a fake transport, n times,
with a trivial handler answering a small JSON body through the `LeanSink` (on trees with the
route table: routed, access-checked, as the gateway does); prints CPU µs per request. Compare
source trees by putting each first on PYTHONPATH, alternating:

    for i in 1 2 3 4 5 6; do for t in /tmp/before src; do
        echo "$t $(PYTHONPATH=$t .venv/bin/python benchmarks/front_micro.py 100000)"; done; done
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

import uvloop

BODY = b'{"model":"m","messages":[{"role":"user","content":"hello there, how are you?"}],"stream":false}'
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
           b"User-Agent: AsyncOpenAI/Python 3\r\n"
           b"Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
           b"Content-Type: application/json\r\nAuthorization: Bearer sk-x\r\nX-Stainless-Lang: python\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
WARMUP = 2000


class _Transport:
    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _server(hot: Any) -> Any:
    """The front's server, as each tree builds it: one route table (now), or aiohttp's `Server`
    with a handler for the two proxied routes (trees before the one front)."""
    try:
        from dpserve.gateway.access import Access, AccessPolicy
        from dpserve.gateway.config import ClientLimits
        from dpserve.gateway.routes import Route, RouteTable
        from dpserve.gateway.server import GatewayServer
    except ImportError:
        from aiohttp import web

        try:
            from dpserve.gateway.front_server import FrontServer
        except ImportError:  # trees from before front_server.py was split out of front.py
            from dpserve.gateway.front import FrontServer  # type: ignore[attr-defined,no-redef]
        return FrontServer(web.Server(lambda request: None), hot, 64 << 20)  # type: ignore[arg-type,return-value]

    def routed(gw: Any, request: Any, sink: Any) -> Any:  # as gateway/handlers.py's `proxied`
        return hot(request.path, request.headers, request.body, sink)
    routes = RouteTable((Route("POST", "/v1/chat/completions", routed, Access.TENANT),))
    return GatewayServer(None, AccessPolicy(None, None, False, lambda headers: None),  # type: ignore[arg-type]
                         ClientLimits(), routes)


async def _measure(n: int) -> float:
    answered = 0

    async def hot(path: str, headers: Mapping[str, str], body: bytes, sink: Any) -> None:
        nonlocal answered
        headers.get("Authorization")
        headers.get("X-Session-Id")
        await sink.whole(200, {"Content-Type": "application/json", "x-dpserve-worker": "w0"}, b'{"ok":1}')
        answered += 1

    server = _server(hot)
    proto = server()
    transport = _Transport()
    proto.connection_made(transport)
    for _ in range(WARMUP):
        proto.data_received(REQUEST)
        await asyncio.sleep(0)
    start = time.process_time()
    for _ in range(n):
        proto.data_received(REQUEST)
        await asyncio.sleep(0)
    while answered < n + WARMUP:
        await asyncio.sleep(0)
    elapsed = time.process_time() - start
    assert transport.writes == n + WARMUP
    return elapsed / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    uvloop.install()
    print(f"{asyncio.run(_measure(n)):.2f}")


if __name__ == "__main__":
    main()
