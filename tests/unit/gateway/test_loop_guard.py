"""Loop guard: which worker URLs reach the gateway's own listening sockets (no packet is sent)."""

from __future__ import annotations

import pytest

from dpserve.gateway.loop_guard import points_at


@pytest.mark.parametrize("listening, url, is_self", [
    ([("127.0.0.1", 8000)], "http://127.0.0.1:8000", True),
    ([("127.0.0.1", 8000)], "http://localhost:8000", True),
    ([("127.0.0.1", 8000)], "http://0.0.0.0:8000", True),
    ([("127.0.0.1", 8000)], "http://[::ffff:127.0.0.1]:8000", True),
    ([("127.0.0.1", 8000)], "http://127.0.0.1:8001", False),
    ([("127.0.0.1", 8000)], "http://127.0.0.2:8000", False),  # another loopback address: not us
    ([("0.0.0.0", 8000)], "http://127.0.0.5:8000", True),
    ([("0.0.0.0", 8000)], "http://192.0.2.1:8000", False),  # not an address of this host
    ([("::", 8000)], "http://[::1]:8000", True),
    ([("::", 8000)], "http://127.0.0.1:8000", True),  # a dual-stack socket takes IPv4 too
    ([("127.0.0.1", 80)], "http://127.0.0.1", True),  # the default port
])
async def test_points_at(listening: list[tuple[str, int]], url: str, is_self: bool) -> None:
    assert await points_at(url, listening) is is_self
