"""LLMEngine: the synchronous engine — add/abort requests and step (schedule → run model → post-process)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from pathlib import Path

from dpserve.engine.block_manager import BlockManager
from dpserve.engine.config import EngineConfig
from dpserve.engine.model_runner import ModelRunner
from dpserve.engine.models.llama_args import LlamaArgs
from dpserve.engine.prompt_limits import check_prompt
from dpserve.engine.sampler import SampleFailure
from dpserve.engine.scheduler import Scheduler
from dpserve.engine.sequence import Sequence
from dpserve.kv_events.publisher import make_publisher
from dpserve.serving.engine_client import EngineError, EngineStats, SamplingParams, TokenDelta


class LLMEngine:
    """Not thread-safe: exactly one thread calls it (the async wrapper's engine thread, or a test)."""

    def __init__(self, config: EngineConfig, model_dir: Path, eos_token_ids: Iterable[int] = ()) -> None:
        self.config = config
        args = LlamaArgs.from_model_dir(model_dir)
        self.max_model_len = config.resolved_max_model_len(args.max_position_embeddings)
        self.kv_events = make_publisher(config.kv_events)
        self.block_manager = BlockManager(config.num_blocks, config.block_size, config.enable_prefix_caching,
                                          record_events=self.kv_events is not None)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs=config.max_num_seqs,
                                   max_num_batched_tokens=config.max_num_batched_tokens,
                                   max_model_len=self.max_model_len, eos_token_ids=eos_token_ids)
        self.runner = ModelRunner(model_dir, device=config.device, dtype=config.dtype,
                                  num_blocks=config.num_blocks, block_size=config.block_size,
                                  max_model_len=self.max_model_len)
        self._arrivals = itertools.count()
        self._sequences: dict[str, Sequence] = {}
        self.num_prefill_tokens_computed = 0  # prompt tokens the model actually ran (cache misses)
        self._publish_kv_events()  # the empty cache of a (re)started engine

    def _publish_kv_events(self) -> None:
        if self.kv_events is not None:
            events = self.block_manager.take_events()
            if events:
                self.kv_events.publish(events)

    def close(self) -> None:
        """Send the KV events still queued and close their sockets (the publisher's thread is a
        daemon: at exit it would drop what it had queued). The engine is not stepped after this."""
        publisher, self.kv_events = self.kv_events, None
        if publisher is not None:
            publisher.close()

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add_request(self, request_id: str, prompt_token_ids: Seq[int], sampling: SamplingParams) -> Sequence:
        """Queue a request; ValueError if the id is in use or the prompt does not fit max_model_len."""
        if request_id in self._sequences:
            raise ValueError(f"request id {request_id!r} is already running")
        self.check_prompt(prompt_token_ids)
        seq = Sequence(request_id, list(prompt_token_ids), sampling, arrival_index=next(self._arrivals))
        self.scheduler.add(seq)
        self._sequences[request_id] = seq
        return seq

    def check_prompt(self, prompt_token_ids: Seq[int]) -> None:
        check_prompt(prompt_token_ids, self.max_model_len, self.runner.args.vocab_size)

    def abort_request(self, request_id: str) -> bool:
        """Stop the request and free its KV blocks now; False if it was unknown or already done."""
        seq = self.scheduler.abort(request_id)
        self._sequences.pop(request_id, None)
        if seq is not None:
            self.runner.release(seq)
        return seq is not None

    def step(self) -> list[tuple[str, TokenDelta]]:
        """One engine iteration; returns (request id, delta) for every request that got a token,
        and for every request whose token could not be sampled (failed alone: finish "abort" with
        the reason, its blocks freed; the rest of the batch goes on)."""
        batch = self.scheduler.schedule()
        if not batch:
            return []
        self.num_prefill_tokens_computed += sum(
            min(it.num_new_tokens, max(0, it.seq.num_prompt_tokens - it.seq.num_computed_tokens))
            for it in batch)
        results = self.runner.run(batch)
        sampled = {seq: t for seq, t in results.items() if not isinstance(t, SampleFailure)}
        outputs: list[tuple[str, TokenDelta]] = []
        for seq in self.scheduler.postprocess(batch, sampled):
            outputs.append((seq.request_id, TokenDelta(
                new_token_ids=[seq.token_ids[-1]], finish_reason=seq.finish_reason,
                num_prompt_tokens=seq.num_prompt_tokens, num_cached_tokens=seq.num_cached_tokens)))
            if seq.is_finished:
                self._sequences.pop(seq.request_id, None)
                self.runner.release(seq)
        for seq, failure in results.items():
            if isinstance(failure, SampleFailure):
                outputs.append((seq.request_id, self.fail_request(seq.request_id, failure.reason)))
        self._publish_kv_events()
        return outputs

    def fail_request(self, request_id: str, reason: str) -> TokenDelta:
        """End one request because of a failure of its own: its blocks are freed now, and the delta
        to send it says why (finish "abort" with an EngineError)."""
        self.abort_request(request_id)
        return TokenDelta([], finish_reason="abort", error=EngineError(reason))

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
                           kv_cache_usage=bm.usage, prefix_cache_queries=bm.prefix_cache_queries,
                           prefix_cache_hits=bm.prefix_cache_hits,
                           num_preemptions=self.scheduler.num_preemptions,
                           max_num_seqs=self.config.max_num_seqs)

    def generate(self, prompts: Seq[Seq[int]],
                 sampling: SamplingParams | Seq[SamplingParams]) -> list[list[int]]:
        """Offline helper: run prompts to completion together; returns each one's output tokens."""
        params = [sampling] * len(prompts) if isinstance(sampling, SamplingParams) else list(sampling)
        base = next(self._arrivals)
        ids = [f"offline-{base}-{i}" for i in range(len(prompts))]
        outputs: dict[str, list[int]] = {rid: [] for rid in ids}
        for rid, prompt, p in zip(ids, prompts, params, strict=True):
            self.add_request(rid, prompt, p)
        pending = set(ids)
        while pending:
            for rid, delta in self.step():
                outputs[rid].extend(delta.new_token_ids)
                if delta.finish_reason is not None:
                    pending.discard(rid)
        return [outputs[rid] for rid in ids]
