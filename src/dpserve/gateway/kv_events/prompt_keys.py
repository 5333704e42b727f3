"""A request's KV block keys, computed as the replica computes them, in a worker process.

Same parsing and tokenisation as the replica's server (`serving.prepare.prompt_token_ids`: chat
template, then the tokenizer), same block size (learned from the replicas' events), same chained
key (`kv_events.block_hash`), so a key in the index is a block the replica really holds.

Why a process (benchmarks/prompt_keys_cost.py, docs/benchmarks.md): on the event loop the work
is all loop time — SmolLM2's tokenizer with its chat template takes 0.4 ms at 1 KB, 3.3 ms at
10 KB, 43 ms at 100 KB (the sim's 0.1 / 1.0 / 6.4 ms), and a burst of 32 such 10 KB requests
stalled the loop 104 ms. The round trip costs the loop 100-250 µs whatever the size (a burst of
32 × 10 KB: 1.1 ms stall) and adds 0.4-0.7 ms of latency to a 1 KB request on an idle loop,
1.3-3.8 ms on a saturated one. So the process is cheaper for the loop from ~300 B (SmolLM2) or
~1 KB (sim) up — prompts shorter than that hold a block or two, where prefix routing gains
little. A request never waits for the process to start (`is_ready`); policies other than
precise_prefix never come here.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from dpserve.gateway.kv_events import keyer_process
from dpserve.serving.engine_client import Tokenizer

log = logging.getLogger(__name__)

SIM_TOKENIZER = "sim"  # the simulator's tokenizer (`dpserve sim` replicas)
_STOP_GRACE_S = 5.0


def load_tokenizer(spec: str) -> Tokenizer:
    """`sim`, a bundled model name or an HF-format model directory → the replica's tokenizer."""
    if spec == SIM_TOKENIZER:
        from dpserve.sim.tokenizer import SimTokenizer

        return SimTokenizer()
    from dpserve.engine.tokenizer import HFTokenizer
    from dpserve.model_store import resolve_model

    return HFTokenizer(resolve_model(spec).path)


def block_keys_for(tokenizer: Tokenizer, endpoint: str, body: Mapping[str, Any],
                   block_size: int) -> tuple[tuple[int, ...], int] | None:
    """(keys of the prompt's full blocks, prompt tokens); None for a body the replica would refuse."""
    from dpserve.kv_events.block_hash import chain_keys
    from dpserve.protocol import RequestError, parse_chat_request, parse_completion_request
    from dpserve.serving.prepare import prompt_token_ids

    try:
        parsed = (parse_chat_request(body) if endpoint.endswith("/chat/completions")
                  else parse_completion_request(body))
        token_ids = prompt_token_ids(parsed, tokenizer)
    except (RequestError, ValueError, TypeError, LookupError):
        return None
    return tuple(chain_keys(token_ids, block_size)), len(token_ids)


class PromptKeyer:
    """Block keys of requests from one spawned process, over two pipes read and written on the
    event loop itself (`add_reader`/`add_writer`, non-blocking): no thread between the loop and the
    process. The thread hops of the `ProcessPoolExecutor` this replaced (its feeder and result
    threads, each waiting for the GIL a busy loop holds) made a 1-10 KB round trip take 0.8-5.7 ms
    on an idle loop but 0.7-2.4 s (p50; up to 12.7 s) on a saturated one; now 0.4-3.7 ms and
    1.3-3.8 ms (benchmarks/prompt_keys_cost.py, `busy_process_*`). Requests are answered in order,
    so each reply resolves the oldest waiting future. Started lazily; `close()` ends it."""

    def __init__(self, tokenizer_spec: str) -> None:
        self.tokenizer_spec = tokenizer_spec
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: BaseProcess | None = None
        self._requests: Connection | None = None  # we write, the process reads
        self._replies: Connection | None = None  # the process writes, we read
        self._unsent = bytearray()  # request frames the pipe has not taken yet
        self._received = bytearray()  # reply bytes short of a whole frame
        self._waiting: deque[asyncio.Future[Any]] = deque()  # one per request sent, oldest first
        self._state: Literal["stopped", "starting", "ready", "failed"] = "stopped"

    def start(self) -> None:
        """Spawn the process, which loads the tokenizer in the background (a second or more);
        no-op while one runs, or after one failed to load (routing stays on the tree). Called on
        the event loop."""
        if self._state != "stopped":
            return
        self._loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        requests_r, self._requests = ctx.Pipe(duplex=False)
        self._replies, replies_w = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=keyer_process.serve, name="dpserve-prompt-keys", daemon=True,
                                    args=(self.tokenizer_spec, requests_r, replies_w))
        self._process.start()
        requests_r.close()  # the process holds these ends now: its death is an EOF here
        replies_w.close()
        os.set_blocking(self._requests.fileno(), False)
        os.set_blocking(self._replies.fileno(), False)
        self._loop.add_reader(self._replies.fileno(), self._on_readable)
        self._state = "starting"

    @property
    def is_ready(self) -> bool:
        """The process has its tokenizer: a request's keys now cost only the round trip. Until then
        callers route without keys rather than wait (measured: the first 64 requests of a burst
        waited 200-600 ms for the process's start-up on a loaded 2-core machine)."""
        return self._state == "ready"

    async def keys(self, endpoint: str, body: Mapping[str, Any],
                   block_size: int) -> tuple[tuple[int, ...], int] | None:
        """None when the body cannot be tokenised (the replica answers the client), the tokenizer
        could not load, or the process died (it is restarted on the next request)."""
        self.start()
        if self._state == "failed":
            return None
        assert self._loop is not None
        reply: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append(reply)
        self._send(keyer_process.encode_frame((endpoint, dict(body), block_size)))
        return await reply

    def close(self, wait: bool = True) -> None:
        """End the process (it sees EOF on its request pipe); callers still waiting get None."""
        process = self._process
        self._stop_io()
        if process is not None and wait:
            process.join(_STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join(_STOP_GRACE_S)
        self._state = "stopped"

    # -- the pipes, on the event loop ---------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        if self._requests is None:  # died while the frame was being made
            self._answer_all(None)
            return
        if self._unsent:  # the pipe is full: keep the order
            self._unsent += frame
            return
        try:
            written = os.write(self._requests.fileno(), frame)
        except BlockingIOError:
            written = 0
        except OSError:  # the process is gone: the reader sees the EOF and restarts it
            return
        if written < len(frame):
            self._unsent += memoryview(frame)[written:]
            assert self._loop is not None
            self._loop.add_writer(self._requests.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        assert self._requests is not None and self._loop is not None
        try:
            written = os.write(self._requests.fileno(), self._unsent)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._unsent)
        del self._unsent[:written]
        if not self._unsent:
            self._loop.remove_writer(self._requests.fileno())

    def _on_readable(self) -> None:
        assert self._replies is not None
        try:
            data = os.read(self._replies.fileno(), 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._on_process_gone()
            return
        self._received += data
        for reply in keyer_process.take_frames(self._received):
            if self._state == "starting":
                self._on_start_reply(reply)
            elif self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():  # its caller may have been cancelled
                    waiter.set_result(reply)

    def _on_start_reply(self, reply: tuple[str, str | None]) -> None:
        kind, why = reply
        if kind == "ready":
            self._state = "ready"
            return
        log.warning("precise_prefix: the tokenizer process could not load tokenizer %r (%s); "
                    "routing by the approximate tree", self.tokenizer_spec, why)
        self._stop_io()
        self._state = "failed"

    def _on_process_gone(self) -> None:
        if self._state == "ready":
            log.warning("precise_prefix: the tokenizer process died (tokenizer %r); restarting it",
                        self.tokenizer_spec)
            self._stop_io()
            self._state = "stopped"  # the next request starts a new one
        else:  # died while loading: as a failed load
            self._on_start_reply(("failed", "the process exited while loading it"))

    def _stop_io(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for conn in (self._requests, self._replies):
                if conn is not None:
                    self._loop.remove_reader(conn.fileno())
                    self._loop.remove_writer(conn.fileno())
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        self._requests = self._replies = None
        self._process = None
        self._unsent.clear()
        self._received.clear()
        self._answer_all(None)

    def _answer_all(self, result: None) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(result)
