"""ZMQ publisher of a replica's KV events: vLLM's PUB multipart and ROUTER replay, off the engine's thread.

Wire (as vLLM 0.32's ZmqEventPublisher): every batch goes out on the PUB socket as the multipart
`(topic, seq as 8-byte big-endian, msgpack payload)`; the last `buffer_steps` batches are kept for
the ROUTER replay socket, where a DEALER sends `(b"", start seq as 8 bytes)` and gets back
`(b"", topic, seq, payload)` for every kept batch from `start` on, then `(b"", b"", -1 as 8 signed
bytes, b"")`. Sequence numbers start at 0 in every process, so a subscriber sees a restart.

`publish` only stamps the sequence number and enqueues (microseconds on the engine's step); the
background thread encodes, sends and answers replays. A full queue drops the batch but keeps its
number, so subscribers see the gap and resynchronise instead of silently missing it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from dpserve.kv_events.config import KVEventsConfig
from dpserve.kv_events.wire import EventBatch, KVEvent, encode_batch
from dpserve.log import ThrottledLog

log = logging.getLogger(__name__)

END_SEQ = (-1).to_bytes(8, "big", signed=True)
_IDLE_POLL_S = 0.02  # a replay request waits at most this long while no batch is published
# Replays are streamed: each reader gets at most _REPLAY_CHUNK batches a turn of the thread, and
# never more than the replay socket's high-water mark queued (sends wait, never drop: a ROUTER
# drops past it silently, and a replay of 5,000 batches to a reader 0.3 s late arrived cut). So a
# reader that does not read holds at most that much of this process's memory, and at most
# MAX_REPLAYS readers are served at once (more get the end marker at once: their gateway then
# resynchronises from live events); one that takes nothing for _REPLAY_STALL_S loses its replay.
_REPLAY_HWM = 256
_REPLAY_CHUNK = 256
MAX_REPLAYS = 16
_REPLAY_STALL_S = 10.0


@dataclass
class _Replay:
    """One reader's replay in progress: what it still has to be sent, its end marker last."""

    pending: deque[tuple[bytes, bytes]]  # (seq as 8 bytes, payload); (END_SEQ, b"") last
    progressed_at: float = field(default_factory=time.monotonic)


def is_bind_endpoint(endpoint: str) -> bool:
    """vLLM's rule for the PUB socket: bind wildcard, ipc and inproc endpoints; connect to the rest."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


class KvEventPublisher:
    """Publishes each engine step's events; `close()` sends what is queued and ends the thread.

    The sockets belong to the thread (libzmq's are not thread-safe): it closes them as it ends.
    """

    def __init__(self, config: KVEventsConfig) -> None:
        self._topic = config.topic.encode()
        self._queue: queue.Queue[tuple[int, EventBatch]] = queue.Queue(config.max_queue_size)
        self._closing = threading.Event()
        self._seq = itertools.count()
        self._buffer_steps = config.buffer_steps
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, config.hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._replay: zmq.Socket | None = None
        try:
            if is_bind_endpoint(config.endpoint):
                self._pub.bind(config.endpoint)
            else:
                self._pub.connect(config.endpoint)
            if config.replay_endpoint is not None:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.setsockopt(zmq.LINGER, 0)
                self._replay.setsockopt(zmq.SNDHWM, _REPLAY_HWM)
                self._replay.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full reader: EAGAIN, not a drop
                self._replay.bind(config.replay_endpoint)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self.num_dropped = 0
        self._replays: dict[bytes, _Replay] = {}  # the thread's own
        self._warn = ThrottledLog(log)  # a reader can repeat its requests without end
        self._thread = threading.Thread(target=self._run, name="kv-events-publisher", daemon=True)
        self._thread.start()

    def publish(self, events: list[KVEvent]) -> None:
        """Queue one step's events (non-blocking; a full queue drops them, leaving a gap)."""
        seq = next(self._seq)
        try:
            self._queue.put_nowait((seq, EventBatch(time.time(), events)))
        except queue.Full:
            self.num_dropped += 1

    def close(self, timeout_s: float = 1.0) -> None:
        """Send what is queued, then close the sockets; wait at most `timeout_s` for that. A thread
        still sending then goes on in the background (a daemon: it ends with the process at the
        latest); its sockets are never closed under it, which libzmq may answer with an abort."""
        self._closing.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("kv events: %d batches still queued after %.1f s; sending goes on until "
                        "this process ends (subscribers resynchronise on a gap)",
                        self._queue.qsize(), timeout_s)

    def _close_sockets(self) -> None:
        self._pub.close(0)
        if self._replay is not None:
            self._replay.close(0)
        self._ctx.term()

    def _run(self) -> None:
        try:
            self._send_until_closed()
        finally:
            self._close_sockets()

    def _send_until_closed(self) -> None:
        buffer: list[tuple[int, bytes]] = []  # kept for replay, oldest first
        while True:
            busy = False
            if self._replay is not None:
                while self._replay.poll(0):
                    self._start_replay(buffer)
                busy = self._advance_replays()
            try:
                seq, batch = self._queue.get(timeout=0.0 if busy else _IDLE_POLL_S)
            except queue.Empty:
                if self._closing.is_set():  # closed, and everything queued is sent
                    return
                continue
            payload = encode_batch(batch)
            seq_bytes = seq.to_bytes(8, "big")
            try:
                self._pub.send_multipart((self._topic, seq_bytes, payload), copy=False)
            except zmq.ZMQError as exc:  # the batch is still kept: a subscriber replays it
                log.warning("kv events: publishing batch %d failed: %s", seq, exc)
            buffer.append((seq, payload))
            if len(buffer) > 2 * self._buffer_steps:  # trim in bulk: O(1) amortised per batch
                del buffer[:len(buffer) - self._buffer_steps]

    def _start_replay(self, buffer: list[tuple[int, bytes]]) -> None:
        assert self._replay is not None
        frames = self._replay.recv_multipart()
        if len(frames) != 3 or len(frames[2]) != 8:
            self._warn.warning("malformed", "kv events: ignoring a malformed replay request (%d frames)",
                               len(frames))
            return
        client, _, start_bytes = frames
        start = int.from_bytes(start_bytes, "big")
        pending: deque[tuple[bytes, bytes]] = deque()
        if client in self._replays or len(self._replays) < MAX_REPLAYS:
            pending.extend((seq.to_bytes(8, "big"), payload)
                           for seq, payload in buffer[-self._buffer_steps:] if seq >= start)
        else:
            self._warn.warning("busy", "kv events: %d replays under way; this one gets only the end "
                               "marker", len(self._replays))
        pending.append((END_SEQ, b""))
        self._replays[client] = _Replay(pending)  # a reader's new request replaces its old

    def _advance_replays(self) -> bool:
        """Send each reader its next chunk, as far as its queue takes; True if any took some."""
        assert self._replay is not None
        progressed = False
        now = time.monotonic()
        for client, replay in list(self._replays.items()):
            sent = 0
            try:
                while replay.pending and sent < _REPLAY_CHUNK:
                    seq_bytes, payload = replay.pending[0]
                    topic = b"" if seq_bytes == END_SEQ else self._topic
                    self._replay.send_multipart((client, b"", topic, seq_bytes, payload),
                                                flags=zmq.NOBLOCK, copy=False)
                    replay.pending.popleft()
                    sent += 1
            except zmq.Again:  # its queue is full: the rest on a later turn
                pass
            except zmq.ZMQError:  # the reader is gone (EHOSTUNREACH)
                del self._replays[client]
                continue
            if sent:
                replay.progressed_at = now
                progressed = True
            if not replay.pending:
                del self._replays[client]
            elif now - replay.progressed_at > _REPLAY_STALL_S:
                self._warn.warning("stalled", "kv events: a replay reader took nothing for %.0f s; its "
                                   "replay is dropped", _REPLAY_STALL_S)
                del self._replays[client]
        return progressed


def make_publisher(config: KVEventsConfig | None) -> KvEventPublisher | None:
    """A publisher when the config enables zmq publishing, else None (events are not even recorded)."""
    return KvEventPublisher(config) if config is not None and config.is_publishing else None
