"""One request's run on the engine: engine deltas → text deltas, stop strings, usage, metrics.

The engine iterator is always closed (aclose) when the run ends — finished, stopped by a stop
string, or abandoned by a disconnected client — which aborts the request inside the engine.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from dpserve.serving.detokenizer import IncrementalDetokenizer, StopStringMatcher
from dpserve.serving.engine_client import EngineClient, GenerateRequest, TokenDelta
from dpserve.serving.metrics import ReplicaMetrics
from dpserve.serving.prepare import PreparedRequest
from dpserve.serving.responses import Usage


@dataclass(frozen=True)
class TextDelta:
    text: str
    finish_reason: str | None
    # With `return_token_ids`: exactly the tokens whose text is `text` (see Generation).
    token_ids: tuple[int, ...] = ()


class Generation:
    """Runs one prepared request; iterate `deltas()` (inside `contextlib.aclosing`).

    With `return_token_ids` each delta carries the ids whose text it is, so what a client has
    received is always text(ids received): text held back (an incomplete char, a possible stop
    string) holds its tokens back too. A gateway resuming a cut stream from the ids it saw then
    neither loses nor repeats text (vLLM sends each step's ids as they come instead).
    """

    def __init__(self, client: EngineClient, metrics: ReplicaMetrics, req: PreparedRequest,
                 is_disconnected: Callable[[], bool]) -> None:
        self._client = client
        self._metrics = metrics
        self._req = req
        self._is_disconnected = is_disconnected
        context = req.prompt_token_ids if req.prompt_is_token_ids else ()
        self._detok = IncrementalDetokenizer(client.tokenizer, context)
        self._stops = StopStringMatcher(req.stop)
        self._held_ids: list[int] = []  # return_token_ids: tokens whose text is not out yet
        self._held_text = ""
        self.num_prompt_tokens = len(req.prompt_token_ids)
        self.num_cached_tokens = 0
        self.num_generated_tokens = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None  # vLLM's: the stop string or stop token id hit

    @property
    def usage(self) -> Usage:
        return Usage(self.num_prompt_tokens, self.num_generated_tokens, self.num_cached_tokens)

    async def deltas(self) -> AsyncGenerator[TextDelta, None]:
        start = time.monotonic()
        last_token_at: float | None = None
        engine_iter = self._client.generate(
            GenerateRequest(self._req.request_id, self._req.prompt_token_ids, self._req.sampling))
        try:
            async for delta in engine_iter:
                if delta.new_token_ids:
                    last_token_at = self._record_timing(start, last_token_at, len(delta.new_token_ids))
                out = self._absorb(delta)
                if out.text or out.finish_reason or out.token_ids:
                    yield out
                if self.finish_reason is not None:
                    return
                if self._is_disconnected():
                    self.finish_reason = "abort"
                    return
            self.finish_reason = self.finish_reason or "abort"  # iterator ended without a reason
        finally:
            await _aclose(engine_iter)
            self._metrics.record_finished(
                num_prompt_tokens=self.num_prompt_tokens, num_generated_tokens=self.num_generated_tokens,
                finish_reason=self.finish_reason or "abort", e2e_s=time.monotonic() - start)

    def _record_timing(self, start: float, last_token_at: float | None, num_tokens: int) -> float:
        now = time.monotonic()
        if last_token_at is None:
            self._metrics.record_first_token(now - start)
        else:
            self._metrics.record_inter_token(now - last_token_at, num_tokens)
        return now

    def _absorb(self, delta: TokenDelta) -> TextDelta:
        """Fold one engine delta in; sets finish_reason when the request is done."""
        self.num_generated_tokens += len(delta.new_token_ids)
        if delta.num_prompt_tokens:
            self.num_prompt_tokens = delta.num_prompt_tokens
        self.num_cached_tokens = max(self.num_cached_tokens, delta.num_cached_tokens)
        text, stopped = self._stops.push(self._detok.push(delta.new_token_ids))
        if not stopped and delta.finish_reason is not None:
            more, stopped = self._stops.push(self._detok.flush())
            text += more
            if not stopped:
                text += self._stops.flush()
        if stopped:
            self.finish_reason = "stop"
            self.stop_reason = self._stops.matched
        elif delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
            last = delta.new_token_ids[-1] if delta.new_token_ids else None
            if delta.finish_reason == "stop" and last in self._req.sampling.stop_token_ids:
                self.stop_reason = last
        if not self._req.return_token_ids:
            return TextDelta(text, self.finish_reason)
        return self._aligned(text, delta.new_token_ids)

    def _aligned(self, text: str, new_ids: list[int]) -> TextDelta:
        """Text and ids released together, only where the text of every id so far is out."""
        self._held_ids += new_ids
        self._held_text += text
        if self.finish_reason is None and (self._detok.incomplete or self._stops.holding):
            return TextDelta("", None)
        out = TextDelta(self._held_text, self.finish_reason, tuple(self._held_ids))
        self._held_ids, self._held_text = [], ""
        return out


async def _aclose(iterator: AsyncIterator[TokenDelta]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
