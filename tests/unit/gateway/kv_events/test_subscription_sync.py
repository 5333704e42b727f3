"""ReplicaSubscription's sequence logic: in order, duplicates, gaps filled by replay, lost state cleared."""

from __future__ import annotations

from typing import Any

import pytest

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.kv_events.subscriber import ReplicaSubscription
from dpserve.kv_events.wire import AllBlocksCleared, BlockRemoved, EventBatch, KVEvent, encode_batch


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
    sub, rec = subscription([])
    for seq in (0, 1, 1, 0, 2):
        await sub._on_live(seq, payload(seq))
    assert rec.got == [0, 1, 2] and sub.next_seq == 3


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
