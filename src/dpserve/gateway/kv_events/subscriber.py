"""One replica's KV event stream, kept in sync: ZMQ SUB for live batches, the replay socket on gaps.

The state the gateway delivers for a replica is always either exact or a subset of the truth
(only misses, never a block the replica no longer has):
- on (re)connection it asks the replay socket for every batch from seq 0 (a replica that was
  already running fills the index; one that restarted starts with AllBlocksCleared);
- on losing the connection (the replica died or restarts) its state is cleared at once;
- on a gap in sequence numbers it asks for the missing batches; if the replay no longer has them
  (or there is no replay socket, or it does not answer in time) the state is cleared and rebuilt
  from the events that follow, with a warning — never left stale;
- a batch seen twice (live and replayed) is applied once; a live number at or below the last one
  on the same connection is a publisher that restarted behind a connection that stayed up (a
  forwarder): cleared and rebuilt too, as is a replay that skips a number.

What a publisher sends cannot stop the subscription or starve the gateway: a message that is
malformed, too large (the socket drops the peer), or that the index cannot apply costs that
replica its state, not the subscription; a flood is read in bounded chunks, each followed by a
turn of the event loop; a replay is bounded in size and applied in chunks; a replay socket that
does not answer is not asked again for a while. Repeated warnings are throttled.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.kv_events.wire import MAX_BATCH_BYTES, AllBlocksCleared, KVEvent, WireError, decode_batch
from dpserve.log import ThrottledLog

log = logging.getLogger(__name__)

Deliver = Callable[[str, list[KVEvent]], None]
REPLAY_TIMEOUT_S = 2.0
RECONNECT_AFTER_S = 0.1  # libzmq's own reconnect interval
REPLAY_BACKOFF_S = 30.0  # after a replay that did not answer, gaps clear the state without asking
REPLAY_MAX_BATCHES = 20_000  # twice a publisher's default replay buffer (buffer_steps 10,000)
REPLAY_MAX_BYTES = 64 << 20
REPLAY_NEXT_FRAME_S = 1.0  # a replay that has begun may pause this long between batches...
REPLAY_MAX_S = 10.0  # ... and take this long in all
RCV_HWM = 256  # messages the SUB socket queues; beyond, the publisher drops them (a gap, replayed)
DRAIN_MAX_MESSAGES = 256  # messages handled per turn of the event loop...
DRAIN_MAX_S = 0.005  # ... or seconds
_CLEARED: list[KVEvent] = [AllBlocksCleared()]
_MONITOR_IDS = itertools.count()


@dataclass
class SubscriptionStats:
    batches: int = 0
    gaps: int = 0
    resyncs: int = 0
    state_losses: int = 0  # times the replica's state was cleared because events were lost
    malformed: int = 0  # messages that were not a batch (wrong frames, not decodable, not applicable)
    restarts: int = 0  # times the subscription failed and was started again


class ReplicaSubscription:
    """Runs (as one task) until cancelled; delivers each batch's events in order."""

    def __init__(self, worker_id: str, endpoint: KvEventsEndpoint, ctx: zmq.asyncio.Context,
                 deliver: Deliver, replay_timeout_s: float = REPLAY_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.worker_id = worker_id
        self.endpoint = endpoint
        self._ctx = ctx
        self._deliver = deliver
        self._replay_timeout_s = replay_timeout_s
        self._clock = clock
        self._no_replay_until = -1.0
        self._warn = ThrottledLog(log)
        self.next_seq: int | None = None  # None: no sync point; the next batch starts one
        # The last live number on this connection: a publisher's only rise, so one at or below it
        # is the publisher restarted behind a connection that stayed up (a forwarder, a proxy).
        self._last_live: int | None = None
        self.stats = SubscriptionStats()

    async def run(self) -> None:
        while True:
            await self._session()
            await asyncio.sleep(RECONNECT_AFTER_S)

    async def _session(self) -> None:
        """One SUB socket, until its publisher disconnects. A new socket for each connection:
        libzmq never reconnects a socket that dropped its peer for an oversized message."""
        self._last_live = None
        sub = self._ctx.socket(zmq.SUB)
        monitor: zmq.asyncio.Socket | None = None
        try:  # every socket is closed, even if setting it up fails: an open one hangs the context's term()
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.MAXMSGSIZE, MAX_BATCH_BYTES + 1024)  # larger: libzmq drops the peer
            sub.setsockopt(zmq.RCVHWM, RCV_HWM)
            sub.setsockopt(zmq.SUBSCRIBE, self.endpoint.topic.encode())
            # Our own name: pyzmq's default names it by the socket's fd, which a socket closed just
            # before may still hold while libzmq tears it down.
            monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED,
                                             addr=f"inproc://dpserve-kv-monitor-{next(_MONITOR_IDS)}")
            sub.connect(self.endpoint.endpoint)
            poller = zmq.asyncio.Poller()
            poller.register(sub, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while True:
                ready = dict(await poller.poll())  # a turn of the loop, also when a socket is ready
                if monitor in ready:
                    event = parse_monitor_message(await monitor.recv_multipart())
                    if event["event"] == zmq.EVENT_DISCONNECTED:
                        self._warn.info("disconnect", "kv events: %s disconnected; its cache state is "
                                        "cleared", self.worker_id)
                        self._deliver(self.worker_id, _CLEARED)
                        self.next_seq = None
                        return
                    if event["event"] == zmq.EVENT_CONNECTED:
                        self._deliver(self.worker_id, _CLEARED)  # what we knew is from before; rebuild it
                        await self._resync(0, cleared=True)
                if sub in ready:
                    await self._drain(sub)
        finally:
            if monitor is not None:
                sub.disable_monitor()
                monitor.close(0)
            sub.close(0)

    async def _drain(self, sub: zmq.asyncio.Socket) -> None:
        """What is queued, up to DRAIN_MAX_MESSAGES or DRAIN_MAX_S: the rest after a loop turn."""
        deadline = self._clock() + DRAIN_MAX_S
        for _ in range(DRAIN_MAX_MESSAGES):
            try:  # a NOBLOCK receive's future is already done: no trip through the loop
                frames = await sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or len(frames[1]) != 8:
                self.stats.malformed += 1
                self._warn.warning("frames", "kv events: %s sent a malformed message (%d frames)",
                                   self.worker_id, len(frames))
            else:
                await self._on_live(int.from_bytes(frames[1], "big"), frames[2])
            if self._clock() > deadline:
                return

    async def _on_live(self, seq: int, payload: bytes) -> None:
        last, self._last_live = self._last_live, seq
        if last is not None and seq <= last:
            self._lose_state(f"its batch numbers went back from {last} to {seq} (restarted)", kind="restart")
            self._accept(seq, payload)
            return
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
        self.next_seq = seq + 1
        try:
            batch = decode_batch(payload)
        except WireError as exc:
            self.stats.malformed += 1
            self._lose_state(f"batch {seq} cannot be decoded: {exc}", kind="decode")
            return
        self.stats.batches += 1
        if not batch.events:
            return
        try:
            self._deliver(self.worker_id, batch.events)
        except Exception as exc:  # the index could not apply it: its state for this replica is unsure
            self.stats.malformed += 1
            self._lose_state(f"batch {seq} could not be applied ({type(exc).__name__}: {exc})", kind="apply")

    def _lose_state(self, why: str, kind: str = "gap") -> None:
        """Clear the replica's state, with a warning throttled per `kind` of cause."""
        self._warn.warning(kind, "kv events: %s: %s; its cache state is cleared and rebuilt from "
                           "what follows", self.worker_id, why)
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
        deadline = self._clock() + DRAIN_MAX_S
        for seq, payload in replayed:
            if self.next_seq is not None and seq > self.next_seq:  # a batch the publisher dropped
                self._lose_state(f"the replay skips batches {self.next_seq}..{seq - 1}")
            if self.next_seq is None or seq >= self.next_seq:
                self._accept(seq, payload)
            if self._clock() > deadline:  # a long replay is applied in chunks, the loop turning between
                await asyncio.sleep(0)
                deadline = self._clock() + DRAIN_MAX_S

    async def _replay(self, start: int) -> list[tuple[int, bytes]] | None:
        if self.endpoint.replay_endpoint is None or self._clock() < self._no_replay_until:
            return None
        dealer = self._ctx.socket(zmq.DEALER)
        batches: list[tuple[int, bytes]] = []
        size = 0
        loop = asyncio.get_running_loop()
        try:
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.MAXMSGSIZE, MAX_BATCH_BYTES + 1024)
            dealer.connect(self.endpoint.replay_endpoint)
            await dealer.send_multipart((b"", start.to_bytes(8, "big")))
            # The first batch within replay_timeout_s (else the socket is silent: backed off), then
            # each next within REPLAY_NEXT_FRAME_S, all within REPLAY_MAX_S: a long replay on a busy
            # loop is slow, not silent.
            end = loop.time() + REPLAY_MAX_S
            async with asyncio.timeout_at(loop.time() + self._replay_timeout_s) as frame_timeout:
                deadline = self._clock() + DRAIN_MAX_S
                while True:
                    if self._clock() > deadline:  # a queued receive completes without a loop turn
                        await asyncio.sleep(0)
                        deadline = self._clock() + DRAIN_MAX_S
                    frames = await dealer.recv_multipart()
                    frame_timeout.reschedule(min(end, loop.time() + REPLAY_NEXT_FRAME_S))
                    # vLLM 0.32: (b"", topic, seq, payload); before: (b"", seq, payload)
                    if len(frames) not in (3, 4) or len(frames[-2]) != 8:
                        self.stats.malformed += 1
                        self._warn.warning("replay", "kv events: %s: a malformed replay answer (%d frames)",
                                           self.worker_id, len(frames))
                        return None
                    seq = int.from_bytes(frames[-2], "big", signed=True)
                    if seq < 0:
                        return batches
                    size += len(frames[-1])
                    if len(batches) >= REPLAY_MAX_BATCHES or size > REPLAY_MAX_BYTES:
                        self._warn.warning("replay", "kv events: %s: its replay from batch %d is longer "
                                           "than %d batches or %d MiB", self.worker_id, start,
                                           REPLAY_MAX_BATCHES, REPLAY_MAX_BYTES >> 20)
                        return None
                    batches.append((seq, frames[-1]))
        except TimeoutError:
            if batches:  # it answered, too slowly: asked again at the next gap
                self._warn.warning("replay", "kv events: %s: its replay from batch %d stalled after %d "
                                   "batches", self.worker_id, start, len(batches))
                return None
            self._no_replay_until = self._clock() + REPLAY_BACKOFF_S
            self._warn.warning("replay", "kv events: %s: no replay answer within %.1f s; not asked "
                               "again for %.0f s", self.worker_id, self._replay_timeout_s, REPLAY_BACKOFF_S)
            return None
        except zmq.ZMQError as exc:  # an endpoint libzmq refuses: no replay, the subscription goes on
            self._warn.warning("replay", "kv events: %s: cannot use the replay endpoint %s: %s",
                               self.worker_id, self.endpoint.replay_endpoint, exc)
            return None
        finally:
            dealer.close(0)
