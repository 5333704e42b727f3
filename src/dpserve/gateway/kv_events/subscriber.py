"""One replica's KV event stream, kept in sync: ZMQ SUB for live batches, the replay socket on gaps.

The state the gateway delivers for a replica is always either exact or a subset of the truth
(only misses, never a block the replica no longer has):
- on (re)connection it asks the replay socket for every batch from seq 0 (a replica that was
  already running fills the index; one that restarted starts with AllBlocksCleared);
- on losing the connection (the replica died or restarts) its state is cleared at once;
- on a gap in sequence numbers it asks for the missing batches; if the replay no longer has them
  (or there is no replay socket, or it does not answer in time) the state is cleared and rebuilt
  from the events that follow, with a warning — never left stale;
- a batch seen twice (live and replayed) is applied once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.kv_events.wire import AllBlocksCleared, KVEvent, WireError, decode_batch

log = logging.getLogger(__name__)

Deliver = Callable[[str, list[KVEvent]], None]
REPLAY_TIMEOUT_S = 2.0
_CLEARED: list[KVEvent] = [AllBlocksCleared()]


@dataclass
class SubscriptionStats:
    batches: int = 0
    gaps: int = 0
    resyncs: int = 0
    state_losses: int = 0  # times the replica's state was cleared because events were lost


class ReplicaSubscription:
    """Runs (as one task) until cancelled; delivers each batch's events in order."""

    def __init__(self, worker_id: str, endpoint: KvEventsEndpoint, ctx: zmq.asyncio.Context,
                 deliver: Deliver, replay_timeout_s: float = REPLAY_TIMEOUT_S) -> None:
        self.worker_id = worker_id
        self.endpoint = endpoint
        self._ctx = ctx
        self._deliver = deliver
        self._replay_timeout_s = replay_timeout_s
        self.next_seq: int | None = None  # None: no sync point; the next batch starts one
        self.stats = SubscriptionStats()

    async def run(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.endpoint.topic.encode())
        monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sub.connect(self.endpoint.endpoint)
        poller = zmq.asyncio.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    await self._on_monitor(parse_monitor_message(await monitor.recv_multipart()))
                if sub in ready:
                    await self._drain(sub)
        finally:
            sub.disable_monitor()
            monitor.close(0)
            sub.close(0)

    async def _on_monitor(self, message: Mapping[str, Any]) -> None:
        if message["event"] == zmq.EVENT_DISCONNECTED:
            log.info("kv events: %s disconnected; its cache state is cleared", self.worker_id)
            self._deliver(self.worker_id, _CLEARED)
            self.next_seq = None
        elif message["event"] == zmq.EVENT_CONNECTED:
            self._deliver(self.worker_id, _CLEARED)  # what we knew is from before; rebuild it
            await self._resync(0, cleared=True)

    async def _drain(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            try:  # a NOBLOCK receive's future is already done: no trip through the loop
                frames = await sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or len(frames[1]) != 8:
                log.warning("kv events: %s sent a malformed message (%d frames)", self.worker_id, len(frames))
                continue
            await self._on_live(int.from_bytes(frames[1], "big"), frames[2])

    async def _on_live(self, seq: int, payload: bytes) -> None:
        if self.next_seq is None or seq == self.next_seq:
            self._accept(seq, payload)
            return
        if seq < self.next_seq:
            return  # already applied (a replay covered it)
        self.stats.gaps += 1
        expected = self.next_seq
        await self._resync(expected, cleared=False)
        if self.next_seq is None or seq == self.next_seq:  # None: the state was already cleared
            self._accept(seq, payload)
        elif seq > self.next_seq:  # still missing: rebuild from here on
            self._lose_state(f"batches {self.next_seq}..{seq - 1} are lost")
            self._accept(seq, payload)

    def _accept(self, seq: int, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except WireError as exc:
            self._lose_state(f"batch {seq} cannot be decoded: {exc}")
        else:
            self.stats.batches += 1
            if batch.events:
                self._deliver(self.worker_id, batch.events)
        self.next_seq = seq + 1

    def _lose_state(self, why: str) -> None:
        log.warning("kv events: %s: %s; its cache state is cleared and rebuilt from what follows",
                    self.worker_id, why)
        self.stats.state_losses += 1
        self._deliver(self.worker_id, _CLEARED)

    async def _resync(self, start: int, cleared: bool) -> None:
        """Apply the replayed batches from `start` on; if some are gone, clear and take what is there."""
        self.stats.resyncs += 1
        replayed = await self._replay(start)
        if replayed is None:  # no replay socket, or no answer in time
            if not cleared:
                self._lose_state(f"no replay from batch {start}")
            self.next_seq = None
            return
        if replayed and replayed[0][0] > start and not cleared:
            self._lose_state(f"the replay starts at batch {replayed[0][0]}, not {start}")
        self.next_seq = start if not replayed or replayed[0][0] <= start else None
        for seq, payload in replayed:
            if self.next_seq is None or seq >= self.next_seq:
                self._accept(seq, payload)

    async def _replay(self, start: int) -> list[tuple[int, bytes]] | None:
        if self.endpoint.replay_endpoint is None:
            return None
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.endpoint.replay_endpoint)
        batches: list[tuple[int, bytes]] = []
        try:
            await dealer.send_multipart((b"", start.to_bytes(8, "big")))
            async with asyncio.timeout(self._replay_timeout_s):
                while True:
                    frames = await dealer.recv_multipart()
                    # vLLM 0.32: (b"", topic, seq, payload); before: (b"", seq, payload)
                    seq_bytes, payload = frames[-2], frames[-1]
                    seq = int.from_bytes(seq_bytes, "big", signed=True)
                    if seq < 0:
                        return batches
                    batches.append((seq, payload))
        except TimeoutError:
            log.warning("kv events: %s: no replay answer within %.1f s", self.worker_id,
                        self._replay_timeout_s)
            return None
        finally:
            dealer.close(0)
