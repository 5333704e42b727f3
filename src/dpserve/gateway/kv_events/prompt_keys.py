"""A request's KV block keys, computed as the replica computes them, in a worker process.

Same parsing and tokenisation as the replica's server (`serving.prepare.prompt_token_ids`: chat
template, then the tokenizer), same block size (learned from the replicas' events), same chained
key (`kv_events.block_hash`), so a key in the index is a block the replica really holds.

Why a process (benchmarks/prompt_keys_cost.py, docs/benchmarks.md): on the event loop the work
is all loop time — SmolLM2's tokenizer with its chat template takes 0.4 ms at 1 KB, 3.6 ms at
10 KB, 43 ms at 100 KB (the sim's 0.08 / 0.7 / 6.4 ms), and a burst of 32 such 10 KB requests
stalled the loop 125 ms. The round trip costs the loop 50-200 µs whatever the size (a burst of
32 × 100 KB: 8 ms stall) but adds 0.25-0.5 ms of latency to every request, more on a loaded
machine (p50 4-11 ms in the routing experiment on 2 busy cores). So the process is cheaper for
the loop from ~300 B (SmolLM2) or ~1 KB (sim) up — prompts shorter than that hold a block or two,
where prefix routing gains little — and costs latency everywhere. A request never waits for the
process to start (`is_ready`); policies other than precise_prefix never come here.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dpserve.serving.engine_client import Tokenizer

log = logging.getLogger(__name__)

SIM_TOKENIZER = "sim"  # the simulator's tokenizer (`dpserve sim` replicas)
_tokenizer: Tokenizer | None = None  # the worker process's own, built once by _init


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


def _init(spec: str) -> None:
    global _tokenizer
    _tokenizer = load_tokenizer(spec)


def _ready() -> bool:
    return _tokenizer is not None


def _compute(endpoint: str, body: Mapping[str, Any], block_size: int) -> tuple[tuple[int, ...], int] | None:
    assert _tokenizer is not None, "worker not initialised"
    return block_keys_for(_tokenizer, endpoint, body, block_size)


class PromptKeyer:
    """Block keys of requests, one worker process; started lazily, `close()` ends it."""

    def __init__(self, tokenizer_spec: str) -> None:
        self.tokenizer_spec = tokenizer_spec
        self._pool: ProcessPoolExecutor | None = None
        self._warm: Future[bool] | None = None  # done once the worker has loaded the tokenizer

    def start(self) -> None:
        """Spawn the worker and load the tokenizer in the background (a second or more); no-op
        while one runs."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init, initargs=(self.tokenizer_spec,))
            self._warm = self._pool.submit(_ready)
            self._warm.add_done_callback(self._log_failed_start)

    @property
    def is_ready(self) -> bool:
        """The worker has its tokenizer: a request's keys now cost only the round trip. Until then
        callers route without keys rather than wait (measured: the first 64 requests of a burst
        waited 200-600 ms for the worker's start-up on a loaded 2-core machine)."""
        warm = self._warm
        return warm is not None and warm.done() and warm.exception() is None

    def _log_failed_start(self, warm: Future[bool]) -> None:
        if warm.exception() is not None:
            log.warning("precise_prefix: the tokenizer process could not load tokenizer %r (%s); "
                        "routing by the approximate tree", self.tokenizer_spec, warm.exception())

    async def keys(self, endpoint: str, body: Mapping[str, Any],
                   block_size: int) -> tuple[tuple[int, ...], int] | None:
        """None when the body cannot be tokenised (the replica answers the client) or the worker
        broke (it is restarted on the next request)."""
        self.start()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, _compute, endpoint, dict(body), block_size)
        except BrokenProcessPool:
            log.warning("precise_prefix: the tokenizer process died (tokenizer %r); restarting it",
                        self.tokenizer_spec)
            self.close(wait=False)
            return None

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool, self._warm = None, None
