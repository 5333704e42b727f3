"""SimEngine: an EngineClient whose steps take modelled time and emit filler tokens.

The batching and the KV/prefix cache are the built-in engine's own torch-free `Scheduler` and
`BlockManager` (so the sim's cache behaves, and publishes KV events, exactly as the engine's);
the sim adds only the time model and a filler-token sampler. One asyncio task runs the step loop
(schedule → sleep for the step's modelled time → sample → post-process), so tens of replicas fit
on one machine: O(batch) work per step. Steps are paced on a deadline clock, so the loop's own
CPU time overlaps the modelled GPU time instead of adding to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import AsyncGenerator

from dpserve.aio import cancel_and_wait
from dpserve.engine.block_manager import BlockManager
from dpserve.engine.scheduler import ScheduledSeq, Scheduler
from dpserve.engine.sequence import Sequence
from dpserve.kv_events.publisher import make_publisher
from dpserve.serving.engine_client import (
    EngineError,
    EngineStats,
    FinishReason,
    GenerateRequest,
    TokenDelta,
    Tokenizer,
)
from dpserve.sim.config import SimEngineConfig
from dpserve.sim.time_model import StepShape, TimeModel
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
        self.kv_events = make_publisher(config.kv_events)
        self.scheduler = build_scheduler(config, record_events=self.kv_events is not None)
        self.block_manager = self.scheduler.block_manager
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
            self.scheduler.abort(seq.request_id)
            self._channels[id(seq)].push(None, "abort")
        if self.kv_events is not None:
            self.kv_events.close()

    def stats(self) -> EngineStats:
        s, bm = self.scheduler, self.block_manager
        return EngineStats(num_running=len(s.running), num_waiting=len(s.waiting),
                           kv_cache_usage=bm.usage, prefix_cache_queries=bm.prefix_cache_queries,
                           prefix_cache_hits=bm.prefix_cache_hits, num_preemptions=s.num_preemptions,
                           max_num_seqs=self.config.max_num_seqs)

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[TokenDelta, None]:
        seq = Sequence(request.request_id, list(request.prompt_token_ids), request.sampling)
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
            if not seq.is_finished:  # frees its blocks now, even mid-step (see _loop)
                self.scheduler.abort(seq.request_id)
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
            batch = self.scheduler.schedule()
            self._publish_kv_events()  # evictions happen while scheduling
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
                continue
            deadline = max(deadline, loop.time() - 0.05) + self.time_model.wall_time_s(step_shape(batch))
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            # Requests aborted during the step already gave their blocks back: drop them.
            batch = [item for item in batch if not item.seq.is_finished]
            sampled: dict[Sequence, int] = {}
            for item in batch:
                if item.samples:
                    try:
                        sampled[item.seq] = self._sample(item.seq)
                    except Exception as exc:  # one request's failure ends that request, not the loop
                        self._fail(item.seq, exc)
            batch = [item for item in batch if not item.seq.is_finished]  # a failed one was aborted
            for seq in self.scheduler.postprocess(batch, sampled):
                self._channels[id(seq)].push(seq.token_ids[-1], seq.finish_reason)
            self._publish_kv_events()

    def _fail(self, seq: Sequence, exc: Exception) -> None:
        logger.error("request %s failed: %s: %s", seq.request_id, type(exc).__name__, exc, exc_info=exc)
        if not seq.is_finished:
            self.scheduler.abort(seq.request_id)
        self._channels[id(seq)].push(None, "abort", EngineError(f"the request failed: {exc}"))

    def _publish_kv_events(self) -> None:
        if self.kv_events is not None:
            events = self.block_manager.take_events()
            if events:
                self.kv_events.publish(events)

    def _sample(self, seq: Sequence) -> int:
        """The next filler token, or EOS at the answer's natural length (unless ignore_eos);
        the scheduler's post-process then finishes on EOS, stop ids and max_tokens."""
        natural = self._natural_lengths[id(seq)]
        if not seq.sampling.ignore_eos and natural is not None and seq.num_output_tokens + 1 >= natural:
            return EOS_ID  # EOS counts in usage; decode skips it
        return self._samplers[id(seq)].next_token()


def build_scheduler(config: SimEngineConfig, record_events: bool = False) -> Scheduler:
    """The engine's scheduler and block manager with the sim's limits; EOS is the sim's EOS id."""
    block_manager = BlockManager(config.num_blocks, config.block_size, config.enable_prefix_caching,
                                 record_events=record_events)
    return Scheduler(block_manager, max_num_seqs=config.max_num_seqs,
                     max_num_batched_tokens=config.max_num_batched_tokens,
                     max_model_len=config.max_model_len, eos_token_ids=(EOS_ID,))


def step_shape(batch: list[ScheduledSeq]) -> StepShape:
    """What the time model charges for a step: prefill tokens, decoding sequences, context read."""
    decode = [it for it in batch
              if it.num_new_tokens == 1 and it.seq.num_computed_tokens >= it.seq.num_prompt_tokens]
    prefill = sum(it.num_new_tokens for it in batch) - len(decode)
    context = sum(it.seq.num_computed_tokens for it in batch)
    return StepShape(num_prefill_tokens=prefill, num_decode_seqs=len(decode), num_context_tokens=context)
