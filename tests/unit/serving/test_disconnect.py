"""DisconnectWatcher cancels exactly the handlers whose transport closed."""

from __future__ import annotations

import asyncio
from typing import Any

from dpserve.serving.disconnect import DisconnectWatcher


class FakeTransport:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


class FakeRequest:
    def __init__(self) -> None:
        self.transport: Any = FakeTransport()


async def test_only_disconnected_handlers_are_cancelled() -> None:
    watcher = DisconnectWatcher()
    gone, alive = FakeRequest(), FakeRequest()

    async def handler(request: FakeRequest) -> str:
        with watcher.watch(request):  # type: ignore[arg-type]
            await asyncio.sleep(10)
        return "done"

    t_gone = asyncio.create_task(handler(gone))
    t_alive = asyncio.create_task(handler(alive))
    await asyncio.sleep(0)
    assert watcher.cancel_disconnected() == 0
    gone.transport.closing = True
    assert watcher.cancel_disconnected() == 1
    await asyncio.sleep(0)
    assert t_gone.cancelled() and not t_alive.done()
    alive.transport = None  # aiohttp drops the transport once the connection is lost
    assert watcher.cancel_disconnected() == 1
    await asyncio.sleep(0)
    assert t_alive.cancelled()
