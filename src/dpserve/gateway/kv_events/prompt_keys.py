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
import pickle
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from dpserve.gateway.kv_events import keyer_process
from dpserve.serving.engine_client import Tokenizer

log = logging.getLogger(__name__)

SIM_TOKENIZER = "sim"  # the simulator's tokenizer (`dpserve sim` replicas)
# Longest a request waits for its keys before the tree routes it: 14x the p99 measured in the
# routing experiment on a busy 2-core machine (17.5 ms); a hint is not worth a longer wait.
KEYS_WAIT_BUDGET_S = 0.25
# Prompts longer than this are routed by the tree, not keyed: tokenising 256 K characters takes
# the sim's tokenizer ~16 ms and SmolLM2's ~110 ms, and one prompt of the 16 MiB a body may hold
# would keep the process from every other request for 5-30 s; a prefill that long is not
# decided by where its prefix sits.
MAX_KEYED_PROMPT_CHARS = 256 * 1024
_RESTART_AFTER_LOAD_DEATH_S = 10.0
_KILL_JOIN_S = 2.0
_REAP_POLL_S = 0.05


def load_tokenizer(spec: str, memo_bytes: int = 0) -> Tokenizer:
    """`sim`, a bundled model name, an HF-format model directory or a hub id already in the local HF
    cache (model_store.hub_cache) → the replica's tokenizer;
    `memo_bytes`: its chat prompts' segments remembered (`serving.encode_memo`)."""
    if spec == SIM_TOKENIZER:
        from dpserve.sim.tokenizer import SimTokenizer

        return SimTokenizer(memo_bytes=memo_bytes)
    from dpserve.engine.tokenizer import HFTokenizer
    from dpserve.model_store import ModelNotFoundError, resolve_model
    from dpserve.model_store.hub_cache import VOCABULARY_FILES, cached_tokenizer_dir, hub_cache_dir

    try:
        path = resolve_model(spec).path
    except ModelNotFoundError as exc:  # a hub id, as `serve --backend vllm --model org/name` passes
        cached = cached_tokenizer_dir(spec)
        if cached is None:
            raise ModelNotFoundError(
                f"{exc}; nor is it a Hugging Face hub id whose tokenizer (tokenizer_config.json or "
                f"tokenizer.json, with one of {', '.join(VOCABULARY_FILES)}) is in this machine's HF "
                f"cache, {hub_cache_dir()} (the gateway never downloads: put the replica's tokenizer "
                "there, or pass its directory)") from None
        path = cached
    return HFTokenizer(path, memo_bytes=memo_bytes)


def block_keys_for(tokenizer: Tokenizer, endpoint: str, body: Mapping[str, Any],
                   block_size: int) -> tuple[tuple[int, ...], int] | None:
    """(keys of the prompt's full blocks, prompt tokens); None for a body the replica would refuse."""
    from dpserve.errors import HTTPError
    from dpserve.kv_events.block_hash import chain_keys
    from dpserve.protocol import RequestError, parse_chat_request, parse_completion_request
    from dpserve.serving.prepare import prompt_token_ids

    if block_size < 1:
        return None
    try:
        parsed = (parse_chat_request(body) if endpoint.endswith("/chat/completions")
                  else parse_completion_request(body))
        token_ids = prompt_token_ids(parsed, tokenizer)
    except (RequestError, HTTPError, ValueError, TypeError, LookupError):  # HTTPError: the template's 400
        return None
    return tuple(chain_keys(token_ids, block_size)), len(token_ids)


class PromptKeyer:
    """Block keys of requests from one spawned process, over two pipes read and written on the
    event loop itself (`add_reader`/`add_writer`, non-blocking): no thread between the loop and the
    process. The thread hops of the `ProcessPoolExecutor` this replaced (its feeder and result
    threads, each waiting for the GIL a busy loop holds) made a 1-10 KB round trip take 0.8-5.7 ms
    on an idle loop but 0.7-2.4 s (p50; up to 12.7 s) on a saturated one; now 0.4-3.7 ms and
    1.3-3.8 ms (benchmarks/prompt_keys_cost.py, `busy_process_*`).

    Every request frame carries a sequence number its reply repeats. Keys are a routing hint, so
    no caller waits long for them: past `wait_budget_s` a caller gets None (the tree routes it),
    and while the oldest request is older than that (a huge prompt, a stopped process) new ones
    are not sent at all. Started lazily; `close()` ends it for good."""

    def __init__(self, tokenizer_spec: str, wait_budget_s: float = KEYS_WAIT_BUDGET_S) -> None:
        self.tokenizer_spec = tokenizer_spec
        self.wait_budget_s = wait_budget_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: BaseProcess | None = None
        self._requests: Connection | None = None  # we write, the process reads
        self._replies: Connection | None = None  # the process writes, we read
        self._unsent = bytearray()  # request frames the pipe has not taken yet
        self._received = bytearray()  # reply bytes short of a whole frame
        self._waiting: deque[tuple[int, float, asyncio.Future[Any]]] = deque()  # (seq, sent at, reply)
        self._next_seq = 0
        self._expiry: asyncio.TimerHandle | None = None
        self._not_before = 0.0  # loop time before which start() does not respawn (died loading)
        self._state: Literal["stopped", "starting", "ready", "failed", "closed"] = "stopped"
        self.num_late = 0  # requests routed without keys: past the budget, or sent none while behind

    def start(self) -> None:
        """Spawn the process, which loads the tokenizer in the background (a second or more);
        no-op while one runs, after a tokenizer failed to load (routing stays on the tree), after
        `close()`, and for a while after a process died loading. Called on the event loop."""
        if self._state != "stopped":
            return
        loop = self._loop = asyncio.get_running_loop()
        if loop.time() < self._not_before:
            return
        ctx = multiprocessing.get_context("spawn")
        requests_r, requests_w = ctx.Pipe(duplex=False)
        replies_r, replies_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=keyer_process.serve, name="dpserve-prompt-keys", daemon=True,
                              args=(self.tokenizer_spec, requests_r, replies_w))
        try:
            process.start()
        except OSError as e:  # no processes or fds left: as a failed load, not an error per request
            for conn in (requests_r, requests_w, replies_r, replies_w):
                conn.close()
            self._fail(f"could not start it: {e}")
            return
        finally:
            requests_r.close()  # the process holds these ends now: its death is an EOF here
            replies_w.close()
        self._process, self._requests, self._replies = process, requests_w, replies_r
        os.set_blocking(requests_w.fileno(), False)
        os.set_blocking(replies_r.fileno(), False)
        loop.add_reader(replies_r.fileno(), self._on_readable)
        self._state = "starting"

    @property
    def is_ready(self) -> bool:
        """The process has its tokenizer: a request's keys now cost only the round trip. Until then
        callers route without keys rather than wait (measured: the first 64 requests of a burst
        waited 200-600 ms for the process's start-up on a loaded 2-core machine)."""
        return self._state == "ready"

    async def keys(self, endpoint: str, body: Mapping[str, Any],
                   block_size: int) -> tuple[tuple[int, ...], int] | None:
        """None when the body cannot be tokenised (the replica answers the client), the keys take
        longer than `wait_budget_s`, the process is behind, could not load its tokenizer or died
        (it is restarted on the next request)."""
        self.start()
        if self._state not in ("starting", "ready"):
            return None
        if self._is_behind():
            self.num_late += 1
            return None
        seq = self._next_seq
        try:  # before anything waits for it: a body that cannot be sent is simply not keyed
            frame = keyer_process.encode_frame(
                (seq, endpoint, body if type(body) is dict else dict(body), block_size))
        except (pickle.PicklingError, RecursionError, TypeError, ValueError):
            return None
        assert self._loop is not None
        self._next_seq += 1
        reply: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append((seq, self._loop.time(), reply))
        self._send(frame)
        if self._expiry is None and self._state == "ready":
            self._expiry = self._loop.call_at(self._loop.time() + self.wait_budget_s, self._expire)
        return await reply

    def close(self) -> None:
        """End the process for good (killed: it holds nothing worth a grace period); callers still
        waiting get None, and later calls too."""
        process = self._process
        self._stop_io()
        if process is not None:
            process.kill()
            process.join(_KILL_JOIN_S)
        self._state = "closed"

    # -- waiting ------------------------------------------------------------------------------
    def _is_behind(self) -> bool:
        """The oldest request has waited past the budget: the process is busy with something big
        (or stopped); new requests are routed by the tree instead of queueing behind it."""
        if self._state != "ready" or not self._waiting:
            return False
        assert self._loop is not None
        return self._loop.time() - self._waiting[0][1] > self.wait_budget_s

    def _expire(self) -> None:
        """Answer None to the callers past the budget; their replies are dropped when they come."""
        self._expiry = None
        assert self._loop is not None
        deadline = self._loop.time() - self.wait_budget_s
        for _, sent_at, reply in self._waiting:
            if sent_at > deadline:
                self._expiry = self._loop.call_at(sent_at + self.wait_budget_s, self._expire)
                return
            if not reply.done():
                reply.set_result(None)
                self.num_late += 1

    # -- the pipes, on the event loop ---------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        assert self._requests is not None and self._loop is not None
        if self._unsent:  # the pipe is full: keep the order
            self._unsent += frame
            return
        try:
            written = os.write(self._requests.fileno(), frame)
        except BlockingIOError:
            written = 0
        except OSError:  # the process is gone: the reader sees the EOF and answers the callers
            return
        if written < len(frame):
            self._unsent += memoryview(frame)[written:]
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
        for frame in keyer_process.take_frames(self._received):
            if self._state == "starting":
                self._on_start_reply(frame)
            else:
                self._on_reply(*frame)

    def _on_reply(self, seq: int, result: Any) -> None:
        while self._waiting and self._waiting[0][0] <= seq:
            waiting_seq, _, reply = self._waiting.popleft()
            if not reply.done():  # not cancelled, not past the budget
                reply.set_result(result if waiting_seq == seq else None)

    def _on_start_reply(self, frame: tuple[str, str | None]) -> None:
        kind, why = frame
        if kind == "ready":
            log.info("precise_prefix: the tokenizer process has loaded %r (%s)", self.tokenizer_spec,
                     _one_line(why or ""))
            self._state = "ready"
            if self._waiting:  # sent while it loaded: their budget starts now
                assert self._loop is not None
                now = self._loop.time()
                self._waiting = deque((seq, now, reply) for seq, _, reply in self._waiting)
                self._expiry = self._loop.call_at(now + self.wait_budget_s, self._expire)
            return
        self._fail(why or "")

    def _fail(self, why: str) -> None:
        log.warning("precise_prefix: the tokenizer process could not load tokenizer %r (%s); "
                    "routing by the approximate tree", self.tokenizer_spec, _one_line(why))
        self._stop_io()
        self._state = "failed"

    def _on_process_gone(self) -> None:
        if self._state == "ready":
            log.warning("precise_prefix: the tokenizer process died (tokenizer %r); restarting it",
                        self.tokenizer_spec)
        else:  # died while loading (killed, out of memory): retried, not at once
            assert self._loop is not None
            self._not_before = self._loop.time() + _RESTART_AFTER_LOAD_DEATH_S
            log.warning("precise_prefix: the tokenizer process exited while loading tokenizer %r; "
                        "routing by the approximate tree, trying again in %.0f s", self.tokenizer_spec,
                        _RESTART_AFTER_LOAD_DEATH_S)
        self._stop_io()
        self._state = "stopped"  # the next request starts a new one

    def _stop_io(self) -> None:
        loop = self._loop
        live = loop is not None and not loop.is_closed()
        for conn in (self._requests, self._replies):
            if conn is not None:
                if live:
                    assert loop is not None
                    loop.remove_reader(conn.fileno())
                    loop.remove_writer(conn.fileno())
                conn.close()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._process is not None and live:
            assert loop is not None
            _reap(self._process, loop)
        self._requests = self._replies = self._process = None
        self._unsent.clear()
        self._received.clear()
        while self._waiting:
            _, _, reply = self._waiting.popleft()
            if not reply.done() and live:
                reply.set_result(None)


def _reap(process: BaseProcess, loop: asyncio.AbstractEventLoop) -> None:
    """Collect the exit status once the process has exited (no zombie), without waiting for it: its
    pipe's EOF comes a moment before the kernel can report the exit, so poll until it can."""
    if process.exitcode is None:  # `exitcode` polls waitpid without blocking
        loop.call_later(_REAP_POLL_S, _reap, process, loop)


def _one_line(text: str, limit: int = 300) -> str:
    """A note from the process for one log line: control characters escaped, at most `limit`."""
    escaped = repr(text)[1:-1]
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."
