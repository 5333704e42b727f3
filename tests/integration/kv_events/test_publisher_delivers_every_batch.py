"""A replica's KV event publisher over real ZMQ sockets delivers every batch it promises: a replay
of thousands of batches reaches a reader that starts reading late, whole and with its end marker,
and `close()` sends what was still queued to the subscribers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from dpserve.kv_events import publisher as publisher_module
from dpserve.kv_events.config import KVEventsConfig
from dpserve.kv_events.publisher import KvEventPublisher
from dpserve.kv_events.wire import BlockStored, KVEvent, decode_batch

pytestmark = pytest.mark.timeout(60)
NUM_BATCHES = 5_000  # past libzmq's default high-water mark of 1,000 messages


def one_block(i: int) -> list[KVEvent]:
    return [BlockStored([i], None, list(range(16)), 16)]


def replay(ctx: zmq.Context, endpoint: str, start: int, read_after_s: float = 0.0) -> tuple[list[int], bool]:
    """(the replayed sequence numbers, whether the end marker came), read `read_after_s` late."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, 3000)
    dealer.connect(endpoint)
    dealer.send_multipart((b"", start.to_bytes(8, "big")))
    time.sleep(read_after_s)
    seqs: list[int] = []
    try:
        while True:
            frames = dealer.recv_multipart()
            seq = int.from_bytes(frames[-2], "big", signed=True)
            if seq < 0:
                return seqs, True
            seqs.append(seq)
    except zmq.Again:
        return seqs, False
    finally:
        dealer.close(0)


def publish_all(publisher: KvEventPublisher, ctx: zmq.Context, endpoint: str) -> None:
    """NUM_BATCHES batches published, and waited for until the last one can be replayed."""
    for i in range(NUM_BATCHES):
        publisher.publish(one_block(i))
    deadline = time.monotonic() + 30
    while replay(ctx, endpoint, NUM_BATCHES - 1) != ([NUM_BATCHES - 1], True):  # all sent
        assert time.monotonic() < deadline, "the publisher never sent its last batch"
        time.sleep(0.01)


def test_a_replay_of_thousands_of_batches_reaches_a_late_reader_whole(tmp_path: Path) -> None:
    """Before replays were streamed (sends that wait, not drop, past the high-water mark), this
    reader got 2,000 batches and no end marker (a ROUTER drops silently past 1,000 queued
    messages)."""
    endpoint = f"ipc://{tmp_path}/replay"
    publisher = KvEventPublisher(KVEventsConfig(True, "zmq", f"ipc://{tmp_path}/pub", endpoint))
    ctx = zmq.Context()
    try:
        publish_all(publisher, ctx, endpoint)
        assert replay(ctx, endpoint, 0, read_after_s=0.5) == (list(range(NUM_BATCHES)), True)
    finally:
        publisher.close()
        ctx.term()


def test_close_sends_what_is_still_queued(tmp_path: Path) -> None:
    config = KVEventsConfig(True, "zmq", f"ipc://{tmp_path}/pub", None)
    publisher = KvEventPublisher(config)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.RCVTIMEO, 100)
    sub.connect(config.endpoint)
    try:
        while True:  # until the subscription is live (a SUB misses what precedes it)
            publisher.publish([])
            try:
                sub.recv_multipart()
                break
            except zmq.Again:
                pass
        for i in range(NUM_BATCHES):
            publisher.publish(one_block(i))
        publisher.close()
        sub.setsockopt(zmq.RCVTIMEO, 1000)
        stored: list[object] = []
        with pytest.raises(zmq.Again):  # all of them, then nothing more
            while True:
                events = decode_batch(sub.recv_multipart()[2]).events  # skips the empty ones
                stored += [h for e in events if isinstance(e, BlockStored) for h in e.block_hashes]
        assert stored == list(range(NUM_BATCHES))
    finally:
        sub.close(0)
        ctx.term()


def test_readers_that_never_read_are_bounded_and_dropped(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Replays are streamed, so a reader that never reads holds at most the socket's high-water
    mark of this process's memory; past MAX_REPLAYS such readers a request gets the end marker at
    once, and a reader that takes nothing for the stall limit loses its replay, which frees its
    place (was: each such reader pinned a copy of the whole buffer, ~28 MB at 10,000 batches)."""
    monkeypatch.setattr(publisher_module, "MAX_REPLAYS", 2)
    monkeypatch.setattr(publisher_module, "_REPLAY_STALL_S", 0.5)
    endpoint = f"ipc://{tmp_path}/replay"
    publisher = KvEventPublisher(KVEventsConfig(True, "zmq", f"ipc://{tmp_path}/pub", endpoint))
    ctx = zmq.Context()
    silent = []
    try:
        publish_all(publisher, ctx, endpoint)
        for _ in range(2):  # two readers that ask for everything and never read
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.RCVHWM, 10)
            dealer.connect(endpoint)
            dealer.send_multipart((b"", (0).to_bytes(8, "big")))
            silent.append(dealer)
        time.sleep(0.2)
        assert replay(ctx, endpoint, 0) == ([], True)  # the third: only the end marker
        time.sleep(1.0)  # the two silent ones are dropped: a reader is served whole again
        assert replay(ctx, endpoint, 0) == (list(range(NUM_BATCHES)), True)
    finally:
        for dealer in silent:
            dealer.close(0)
        publisher.close()
        ctx.term()
