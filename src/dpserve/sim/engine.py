"""SimEngine: an EngineClient whose steps take modelled time and emit filler tokens.

One asyncio task runs the step loop (schedule → sleep for the step's modelled time → sample),
so tens of replicas fit on one machine: no threads, O(batch) work per step. Steps are paced on
a deadline clock, so the loop's own CPU time overlaps the modelled GPU time instead of adding
to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import AsyncGenerator

from dpserve.aio import cancel_and_wait
from dpserve.serving.engine_client import (
    EngineError,
    EngineStats,
    FinishReason,
    GenerateRequest,
    TokenDelta,
    Tokenizer,
)
from dpserve.sim.config import SimEngineConfig
from dpserve.sim.scheduler import SimScheduler, SimSequence
from dpserve.sim.time_model import TimeModel
from dpserve.sim.tokenizer import EOS_ID, FIRST_WORD_ID, NUM_WORDS, SimTokenizer

_LCG_MUL = 6364136223846793005
_LCG_ADD = 1442695040888963407
_MASK64 = (1 << 64) - 1

logger = logging.getLogger(__name__)


class _Channel:
    """Tokens produced for one request, waiting for its consumer (merged if it lags)."""

    def __init__(self) -> None:
        self.token_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.error: EngineError | None = None
        self.event = asyncio.Event()

    def push(self, token_id: int | None, finish_reason: FinishReason | None,
             error: EngineError | None = None) -> None:
        if token_id is not None:
            self.token_ids.append(token_id)
        self.finish_reason = finish_reason
        self.error = error
        self.event.set()


class _Sampler:
    """Per-request filler-token stream: a 64-bit LCG, seeded so output is reproducible."""

    def __init__(self, state: int) -> None:
        self._state = state & _MASK64

    def next_token(self) -> int:
        self._state = (self._state * _LCG_MUL + _LCG_ADD) & _MASK64
        return FIRST_WORD_ID + (self._state >> 33) % NUM_WORDS

    def natural_length(self, mean: int) -> int | None:
        """Where this answer would end by itself: uniform in [mean/2, 3·mean/2]; None if mean is 0."""
        if mean == 0:
            return None
        low = max(1, mean // 2)
        high = max(low, 3 * mean // 2)
        self._state = (self._state * _LCG_MUL + _LCG_ADD) & _MASK64
        return low + (self._state >> 33) % (high - low + 1)


class SimEngine:
    """Implements dpserve.serving.engine_client.EngineClient with a time model."""

    def __init__(self, config: SimEngineConfig) -> None:
        self.config = config
        self.tokenizer: Tokenizer = SimTokenizer()
        self.max_model_len = config.max_model_len
        self.scheduler = SimScheduler(config)
        self.time_model = TimeModel(config.time)
        self._rng = random.Random(config.seed)
        self._channels: dict[int, _Channel] = {}
        self._samplers: dict[int, _Sampler] = {}
        self._natural_lengths: dict[int, int | None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sim-engine")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for seq in [*self.scheduler.running, *self.scheduler.waiting]:
            self.scheduler.abort(seq)
            self._channels[id(seq)].push(None, "abort")

    def stats(self) -> EngineStats:
        s = self.scheduler
        return EngineStats(num_running=len(s.running), num_waiting=len(s.waiting),
                           kv_cache_usage=s.pool.usage, prefix_cache_queries=s.prefix_cache_queries,
                           prefix_cache_hits=s.prefix_cache_hits, num_preemptions=s.num_preemptions)

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[TokenDelta, None]:
        seq = SimSequence(request.request_id, list(request.prompt_token_ids), request.sampling)
        channel = _Channel()
        self._channels[id(seq)] = channel
        sampler = _Sampler(self._sampler_seed(request))
        self._samplers[id(seq)] = sampler
        self._natural_lengths[id(seq)] = sampler.natural_length(self.config.natural_output_len)
        self.scheduler.add(seq)
        self._wake.set()
        first = True
        try:
            while True:
                await channel.event.wait()
                channel.event.clear()
                tokens, channel.token_ids = channel.token_ids, []
                yield TokenDelta(tokens, channel.finish_reason,
                                 num_prompt_tokens=seq.num_prompt_tokens if first else 0,
                                 num_cached_tokens=seq.num_cached_tokens, error=channel.error)
                first = False
                if channel.finish_reason is not None:
                    return
        finally:
            if seq.finish_reason is None:
                self.scheduler.abort(seq)
            del self._channels[id(seq)]
            del self._samplers[id(seq)]
            del self._natural_lengths[id(seq)]

    def _sampler_seed(self, request: GenerateRequest) -> int:
        if request.sampling.seed is not None:
            return request.sampling.seed
        if request.sampling.temperature == 0:  # greedy: same prompt, same output
            return zlib.crc32(bytes(str(list(request.prompt_token_ids)), "ascii"))
        return self._rng.getrandbits(64)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            plan = self.scheduler.schedule()
            if plan.is_empty:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
                continue
            deadline = max(deadline, loop.time() - 0.05) + self.time_model.wall_time_s(plan.shape)
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            for seq in self.scheduler.complete(plan):
                try:
                    self._sample(seq)
                except Exception as exc:  # one request's failure ends that request, not the loop
                    self._fail(seq, exc)

    def _fail(self, seq: SimSequence, exc: Exception) -> None:
        logger.error("request %s failed: %s: %s", seq.request_id, type(exc).__name__, exc, exc_info=exc)
        if seq.finish_reason is None:
            self.scheduler.abort(seq)
        self._channels[id(seq)].push(None, "abort", EngineError(f"the request failed: {exc}"))

    def _sample(self, seq: SimSequence) -> None:
        sampler = self._samplers[id(seq)]
        sampling = seq.sampling
        token = sampler.next_token()
        reason: FinishReason | None = None
        natural = self._natural_lengths[id(seq)]
        if not sampling.ignore_eos and natural is not None and seq.num_generated + 1 >= natural:
            token, reason = EOS_ID, "stop"
        elif token in sampling.stop_token_ids:
            reason = "stop"
        seq.token_ids.append(token)
        if reason is None and seq.num_generated >= sampling.max_tokens:
            reason = "length"
        if reason is not None:
            self.scheduler.finish(seq, reason)
        self._channels[id(seq)].push(token, reason)  # EOS counts in usage; decode skips it
