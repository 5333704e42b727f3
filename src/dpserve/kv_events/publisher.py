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

import zmq

from dpserve.kv_events.config import KVEventsConfig
from dpserve.kv_events.wire import EventBatch, KVEvent, encode_batch

log = logging.getLogger(__name__)

END_SEQ = (-1).to_bytes(8, "big", signed=True)
_IDLE_POLL_S = 0.02  # a replay request waits at most this long while no batch is published
_MAX_HWM = (1 << 31) - 1  # libzmq's high-water marks are C ints


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
                # A ROUTER silently drops what is past its high-water mark (libzmq's default: 1,000
                # messages): a replay of 5,000 batches over ipc to a reader that began reading 0.3 s
                # late delivered 2,000 and no end marker. Room for one whole replay and its end per
                # reader; a reader that never reads costs at most that.
                self._replay.setsockopt(zmq.SNDHWM, min(config.buffer_steps + 1, _MAX_HWM))
                self._replay.bind(config.replay_endpoint)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self.num_dropped = 0
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
            if self._replay is not None and self._replay.poll(0):
                self._serve_replay(buffer)
            try:
                seq, batch = self._queue.get(timeout=_IDLE_POLL_S)
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

    def _serve_replay(self, buffer: list[tuple[int, bytes]]) -> None:
        assert self._replay is not None
        frames = self._replay.recv_multipart()
        if len(frames) != 3 or len(frames[2]) != 8:
            log.warning("kv events: ignoring a malformed replay request (%d frames)", len(frames))
            return
        client, _, start_bytes = frames
        start = int.from_bytes(start_bytes, "big")
        for seq, payload in buffer[-self._buffer_steps:]:
            if seq >= start:
                self._replay.send_multipart((client, b"", self._topic, seq.to_bytes(8, "big"), payload))
        self._replay.send_multipart((client, b"", b"", END_SEQ, b""))


def make_publisher(config: KVEventsConfig | None) -> KvEventPublisher | None:
    """A publisher when the config enables zmq publishing, else None (events are not even recorded)."""
    return KvEventPublisher(config) if config is not None and config.is_publishing else None
