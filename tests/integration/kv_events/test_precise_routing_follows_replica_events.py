"""precise_prefix fed over real ZMQ sockets by replica publishers: a restarted replica (empty cache)
stops attracting its old prefixes within one second, and two gateways route the same prefix to the
same replica (shared truth, no shared database)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.kv_events.feed import KvEventFeed
from dpserve.gateway.policies.base import RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.policies.precise_prefix import PrecisePrefixPolicy
from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.config import KVEventsConfig
from dpserve.kv_events.publisher import KvEventPublisher
from dpserve.kv_events.wire import AllBlocksCleared, BlockStored
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)
BS = 16


@dataclass
class W:
    id: str
    weight: float = 1.0
    in_flight: int = 0

    def load(self) -> float:
        return 0.0


@dataclass
class Replica:
    config: KVEventsConfig
    endpoint: KvEventsEndpoint
    publisher: KvEventPublisher

    def restart(self) -> None:
        """What a restarted engine does: a new publisher (seq from 0) saying its cache is empty."""
        self.publisher.close()
        self.publisher = KvEventPublisher(self.config)
        self.publisher.publish([AllBlocksCleared()])


def start_replica(tmp: Path, name: str) -> Replica:
    pub, replay = f"ipc://{tmp / name}.pub", f"tcp://127.0.0.1:{free_port()}"
    config = KVEventsConfig(True, "zmq", pub, replay)
    return Replica(config, KvEventsEndpoint(pub, replay), KvEventPublisher(config))


def prompt(i: int) -> list[int]:
    return [1000 * i + t for t in range(4 * BS)]


def request(i: int) -> RouteRequest:
    return RouteRequest(f"p{i}", None, "/v1/completions", {}, tuple(chain_keys(prompt(i), BS)))


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[dict[str, Replica]]:
    reps = {name: start_replica(tmp_path, name) for name in ("a", "b")}
    yield reps
    for r in reps.values():
        r.publisher.close()


async def gateway(replicas: dict[str, Replica]) -> tuple[PrecisePrefixPolicy, KvEventFeed]:
    config = PolicyConfig(policy="precise_prefix", kv_pending_ttl_s=0.0, seed=1)
    policy = PrecisePrefixPolicy(config, random.Random(1), time.monotonic)
    feed = KvEventFeed(policy)
    for name, r in replicas.items():
        feed.add(name, r.endpoint)
    return policy, feed


async def eventually(condition: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def chooses(policy: PrecisePrefixPolicy, i: int) -> tuple[str, str]:
    choice = policy.select([W("a"), W("b")], request(i))
    return choice.worker.id, choice.reason


async def test_a_restart_is_reflected_in_routing_within_one_second(replicas: dict[str, Replica]) -> None:
    policy, feed = await gateway(replicas)
    try:
        await eventually(lambda: policy.index.is_tracked("a") and policy.index.is_tracked("b"), 10.0)
        replicas["a"].publisher.publish([BlockStored(chain_keys(prompt(1), BS), None, prompt(1), BS)])
        await eventually(lambda: chooses(policy, 1) == ("a", "cache_hit"), 5.0)
        replicas["a"].restart()
        took = await eventually(lambda: chooses(policy, 1)[1] == "cache_miss", 1.0)
        print(f"restart reflected after {took * 1000:.0f} ms")
    finally:
        await feed.stop()


async def test_two_gateways_send_each_prefix_to_the_same_replica(replicas: dict[str, Replica]) -> None:
    gateways = [await gateway(replicas) for _ in range(2)]
    try:
        for policy, _ in gateways:
            await eventually(lambda p=policy: p.index.is_tracked("a") and p.index.is_tracked("b"), 10.0)  # type: ignore[misc]
        for i in range(8):  # as if each gateway had routed half of the first requests
            name = "ab"[i % 2]
            replicas[name].publisher.publish([BlockStored(chain_keys(prompt(i), BS), None, prompt(i), BS)])
        expected = [("ab"[i % 2], "cache_hit") for i in range(8)]
        for policy, _ in gateways:
            await eventually(lambda p=policy: [chooses(p, i) for i in range(8)] == expected, 5.0)  # type: ignore[misc]
    finally:
        for _, feed in gateways:
            await feed.stop()


async def test_a_gateway_started_late_gets_the_state_from_the_replay(replicas: dict[str, Replica]) -> None:
    replicas["b"].publisher.publish([BlockStored(chain_keys(prompt(3), BS), None, prompt(3), BS)])
    await asyncio.sleep(0.1)  # published before anyone subscribed: only the replay has it
    policy, feed = await gateway(replicas)
    try:
        await eventually(lambda: chooses(policy, 3) == ("b", "cache_hit"), 5.0)
    finally:
        await feed.stop()
