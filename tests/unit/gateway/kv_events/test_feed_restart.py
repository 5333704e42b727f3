"""KvEventFeed: a subscription that fails (a bug) clears its replica's state and is started again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dpserve.gateway.kv_events import feed as feed_module
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.kv_events.feed import KvEventFeed
from dpserve.gateway.kv_events.subscriber import ReplicaSubscription
from dpserve.kv_events.wire import AllBlocksCleared


class Policy:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def on_kv_events(self, worker_id: str, events: list[Any]) -> None:
        self.got.append((worker_id, events))


async def test_a_failed_subscription_clears_the_state_and_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = 0
    again = asyncio.Event()

    async def run(self: ReplicaSubscription) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug")
        again.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(ReplicaSubscription, "run", run)
    monkeypatch.setattr(feed_module, "RESTART_AFTER_S", 0.0)
    policy = Policy()
    feed = KvEventFeed(policy)  # type: ignore[arg-type]
    feed.add("w", KvEventsEndpoint("ipc://unused"))
    await asyncio.wait_for(again.wait(), 5)
    assert runs == 2 and [(w, type(e[0])) for w, e in policy.got] == [("w", AllBlocksCleared)]
    assert feed.gauges()["dpserve_kv_events_restarts_total"] == 1
    await feed.stop()
