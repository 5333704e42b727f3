"""ReplicaSubscription's sequence logic: in order, duplicates, gaps filled by replay, lost state cleared;
and what a misbehaving publisher can do to it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import zmq
import zmq.asyncio

from dpserve.gateway.kv_events import subscriber as subscriber_module
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.kv_events.subscriber import DRAIN_MAX_MESSAGES, ReplicaSubscription
from dpserve.kv_events.wire import (
    MAX_BATCH_BYTES,
    AllBlocksCleared,
    BlockRemoved,
    EventBatch,
    KVEvent,
    encode_batch,
)


def payload(seq: int) -> bytes:
    return encode_batch(EventBatch(0.0, [BlockRemoved([seq])]))


class Recorder:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def __call__(self, worker_id: str, events: list[KVEvent]) -> None:
        for e in events:
            self.got.append("clear" if isinstance(e, AllBlocksCleared) else e.block_hashes[0])  # type: ignore[union-attr]


def subscription(replay: list[tuple[int, bytes]] | None) -> tuple[ReplicaSubscription, Recorder]:
    rec = Recorder()
    sub = ReplicaSubscription("w", KvEventsEndpoint("ipc://unused"), None, rec)  # type: ignore[arg-type]

    async def fake_replay(start: int) -> list[tuple[int, bytes]] | None:
        return None if replay is None else [(s, p) for s, p in replay if s >= start]

    sub._replay = fake_replay  # type: ignore[method-assign]
    return sub, rec


async def test_in_order_and_duplicates_applied_once() -> None:
    """A replay on connection covers batches the SUB socket then delivers live as well."""
    sub, rec = subscription([(s, payload(s)) for s in range(3)])
    await sub._resync(0, cleared=True)
    for seq in (1, 2, 3, 4):
        await sub._on_live(seq, payload(seq))
    assert rec.got == [0, 1, 2, 3, 4] and sub.next_seq == 5 and sub.stats.state_losses == 0


async def test_a_restart_behind_a_connection_that_stays_up_is_seen_at_once() -> None:
    """Live numbers only rise on one connection: one at or below the last is a new process, even
    a few batches after the old one (review_kv_events2 2: a window of 10,000 missed it)."""
    sub, rec = subscription(None)
    for seq in (0, 1, 2):
        await sub._on_live(seq, payload(seq))
    await sub._on_live(0, payload(100))  # the new process's first batch
    await sub._on_live(1, payload(101))
    assert rec.got == [0, 1, 2, "clear", 100, 101] and sub.stats.state_losses == 1


async def test_a_replay_that_skips_a_batch_clears_the_state() -> None:
    """dpserve's publisher drops a batch on a full queue but keeps its number: what the lost batch
    removed would stay indexed if the replay were applied across the hole (review_kv_events2 3)."""
    sub, rec = subscription([(0, payload(0)), (1, payload(1)), (3, payload(3))])
    await sub._resync(0, cleared=True)
    assert rec.got == [0, 1, "clear", 3] and sub.stats.state_losses == 1 and sub.next_seq == 4


async def test_a_gap_is_filled_from_the_replay_socket() -> None:
    sub, rec = subscription([(s, payload(s)) for s in range(5)])
    await sub._on_live(0, payload(0))
    await sub._on_live(3, payload(3))  # 1 and 2 were lost on the PUB socket
    await sub._on_live(4, payload(4))
    assert rec.got == [0, 1, 2, 3, 4] and sub.stats.gaps == 1 and sub.stats.state_losses == 0


@pytest.mark.parametrize("replay", [None, [(s, payload(s)) for s in range(4, 6)]])
async def test_lost_batches_clear_the_state_instead_of_leaving_it_stale(replay: Any) -> None:
    sub, rec = subscription(replay)
    await sub._on_live(0, payload(0))
    await sub._on_live(5, payload(5))  # 1..4 gone: not in the replay (or no replay at all)
    assert rec.got[:2] == [0, "clear"] and rec.got[-1] == 5
    assert sub.stats.state_losses == 1 and sub.next_seq == 6


async def test_a_batch_the_index_cannot_apply_costs_the_state_not_the_subscription() -> None:
    sub, rec = subscription([])
    delivered: list[Any] = []

    def flaky(worker_id: str, events: list[KVEvent]) -> None:
        if isinstance(events[0], BlockRemoved) and events[0].block_hashes == [1]:
            raise TypeError("unhashable")
        rec(worker_id, events)
        delivered.append(events)

    sub._deliver = flaky
    for seq in range(3):
        await sub._on_live(seq, payload(seq))
    assert rec.got == [0, "clear", 2] and sub.stats.state_losses == 1 and sub.stats.malformed == 1
    assert sub.next_seq == 3


async def test_numbers_far_behind_are_a_restarted_publisher_not_duplicates() -> None:
    """Behind a forwarder the connection stays up while the replica restarts and counts from 0."""
    sub, rec = subscription([])
    await sub._on_live(0, payload(0))
    await sub._on_live(2**62, payload(7))  # a jump ahead with no replay: rebuilt from there
    await sub._on_live(1, payload(1))  # far behind: not a duplicate, a restart
    await sub._on_live(2, payload(2))
    assert rec.got == [0, "clear", 7, "clear", 1, 2] and sub.next_seq == 3


class FloodSocket:
    """A SUB socket with an endless queue of good batches."""

    def __init__(self) -> None:
        self.seq = 0

    async def recv_multipart(self, flags: int = 0) -> list[bytes]:
        self.seq += 1
        return [b"kv", (self.seq - 1).to_bytes(8, "big"), payload(self.seq - 1)]


async def test_a_flood_is_read_in_bounded_chunks() -> None:
    """_drain hands the loop back after a bounded amount of work, however much is queued."""
    sub, rec = subscription([])
    sock = FloodSocket()
    await sub._drain(sock)  # type: ignore[arg-type]
    assert 0 < sock.seq <= DRAIN_MAX_MESSAGES and len(rec.got) == sock.seq


async def replay_from(answer: list[list[bytes]] | None,
                      timeout_s: float = 0.2) -> tuple[Any, ReplicaSubscription]:
    """`_replay(0)` against a real ROUTER on 127.0.0.1 that answers `answer` (None: never)."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    sub = ReplicaSubscription("w", KvEventsEndpoint("ipc://unused", f"tcp://127.0.0.1:{port}"), ctx,
                              Recorder(), replay_timeout_s=timeout_s)

    async def serve() -> None:
        identity, *_ = await router.recv_multipart()
        for frames in answer or []:
            await router.send_multipart([identity, *frames])

    server = asyncio.create_task(serve())
    try:
        return await sub._replay(0), sub
    finally:
        server.cancel()
        router.close(0)
        ctx.term()


@pytest.mark.parametrize("frames", [[b"only-one"], [b"", b"kv", b"\x00", b"x"], [b""] * 6])
async def test_a_malformed_replay_answer_is_no_replay(frames: list[bytes]) -> None:
    got, sub = await replay_from([frames])
    assert got is None and sub.stats.malformed == 1


async def test_a_replay_socket_that_does_not_answer_is_not_asked_again_for_a_while() -> None:
    got, sub = await replay_from(None)
    assert got is None
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await sub._replay(5) is None and loop.time() - started < 0.1  # no second 0.2 s wait


async def test_a_slow_replay_is_not_taken_for_a_silent_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first batch within the timeout, the next ones each within REPLAY_NEXT_FRAME_S: a replay
    longer than the first timeout in all is read (review_kv_events2 4)."""
    monkeypatch.setattr(subscriber_module, "REPLAY_NEXT_FRAME_S", 0.2)
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    sub = ReplicaSubscription("w", KvEventsEndpoint("ipc://unused", f"tcp://127.0.0.1:{port}"), ctx,
                              Recorder(), replay_timeout_s=0.3)

    async def serve() -> None:
        identity, *_ = await router.recv_multipart()
        for seq in range(6):  # 0.6 s in all, twice the first timeout
            await router.send_multipart([identity, b"", b"kv", seq.to_bytes(8, "big"), b"p"])
            await asyncio.sleep(0.1)
        await router.send_multipart([identity, b"", b"kv", (-1).to_bytes(8, "big", signed=True), b""])

    server = asyncio.create_task(serve())
    try:
        got = await sub._replay(0)
    finally:
        server.cancel()
        router.close(0)
        ctx.term()
    assert got is not None and [s for s, _ in got] == list(range(6))


async def test_a_replay_answer_is_read() -> None:
    end = (-1).to_bytes(8, "big", signed=True)
    got, _ = await replay_from([[b"", b"kv", (0).to_bytes(8, "big"), b"p0"], [b"", b"kv", end, b""]])
    assert got == [(0, b"p0")]


async def test_after_an_oversized_message_the_next_publisher_is_heard() -> None:
    """libzmq drops a peer that sends more than MAXMSGSIZE and never reconnects that socket: the
    subscription clears the state and connects a new socket, so the replica, restarted, is heard."""
    ctx = zmq.asyncio.Context()
    probe = ctx.socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    endpoint = f"tcp://127.0.0.1:{port}"
    rec = Recorder()
    sub = ReplicaSubscription("w", KvEventsEndpoint(endpoint), ctx, rec)
    task = asyncio.create_task(sub.run())

    async def publish(frames: list[bytes], until: Any) -> None:
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        try:
            for _ in range(100):  # the last publisher's port is released in the background
                try:
                    pub.bind(endpoint)
                    break
                except zmq.ZMQError:
                    await asyncio.sleep(0.02)
            for _ in range(100):  # until the subscriber has joined and the effect shows
                await pub.send_multipart(frames)
                await asyncio.sleep(0.05)
                if until():
                    return
            raise AssertionError(f"not seen: {rec.got}")
        finally:
            pub.close(0)

    try:
        await publish([b"", (0).to_bytes(8, "big"), b"x" * (MAX_BATCH_BYTES + 4096)],
                      lambda: rec.got.count("clear") >= 2)  # connected, then dropped
        rec.got.clear()
        await publish([b"", (0).to_bytes(8, "big"), payload(42)], lambda: 42 in rec.got)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ctx.term()
