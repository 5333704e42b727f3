"""A stand-in gateway for launcher tests: records POST/DELETE /workers (409 on a known url, like
the real one), proxies nothing."""

from __future__ import annotations

from aiohttp import web


class FakeGateway:
    """Remembers the worker list and every add/remove, in order."""

    def __init__(self) -> None:
        self.workers: dict[str, str] = {}  # id → url
        self.events: list[tuple[str, str]] = []  # ("add"|"remove", url)
        self.added: list[dict[str, object]] = []  # every POST /workers body
        self._next_id = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/workers", self._add)
        app.router.add_delete("/workers/{id}", self._remove)
        app.router.add_get("/workers", self._list)
        return app

    async def _add(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.added.append(body)
        url = body["url"]
        if url in self.workers.values():
            return web.json_response({"error": {"message": "already registered"}}, status=409)
        worker_id = f"w{self._next_id}"
        self._next_id += 1
        self.workers[worker_id] = url
        self.events.append(("add", url))
        return web.json_response({"id": worker_id, "url": url}, status=201)

    async def _remove(self, request: web.Request) -> web.Response:
        url = self.workers.pop(request.match_info["id"], None)
        if url is None:
            return web.json_response({"error": {"message": "no such worker"}}, status=404)
        self.events.append(("remove", url))
        return web.Response(status=204)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": k, "url": v} for k, v in self.workers.items()])
