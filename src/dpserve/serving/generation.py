"""One request's run on the engine: engine deltas → text deltas, stop strings, usage, metrics.

The engine iterator is always closed (aclose) when the run ends — finished, stopped by a stop
string, or abandoned by a disconnected client — which aborts the request inside the engine.

A failure stays with its request: the engine failing it, the engine refusing its input or our
own detokenising raising all end `deltas()` with an HTTPError (never a 500: see
REQUEST_FAILED_STATUS), and the replica serves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from dpserve.errors import HTTPError
from dpserve.serving.detokenizer import IncrementalDetokenizer
from dpserve.serving.engine_client import EngineClient, EngineError, GenerateRequest, TokenDelta
from dpserve.serving.metrics import ReplicaMetrics
from dpserve.serving.prepare import PreparedRequest
from dpserve.serving.responses import Usage
from dpserve.serving.stop_strings import StopStringMatcher
from dpserve.serving.token_alignment import TokenTextAligner

logger = logging.getLogger(__name__)

# A request the replica could not finish for reasons of its own (its sampling, its text) gets a
# 4xx: a gateway then neither retries it on every replica nor opens their circuit breakers.
REQUEST_FAILED_STATUS = 422
# The engine itself is down: a gateway retries the request on another replica.
ENGINE_DOWN_STATUS = 503


def request_failed(request_id: str, exc: BaseException) -> HTTPError:
    """An unexpected exception while serving one request: that request fails, the replica serves on."""
    logger.error("request %s failed: %s: %s", request_id, type(exc).__name__, exc, exc_info=exc)
    return HTTPError(REQUEST_FAILED_STATUS, f"the request failed: {type(exc).__name__}: {exc}",
                     code="request_failed")


def engine_failure(error: EngineError) -> HTTPError:
    if error.engine_down:
        return HTTPError(ENGINE_DOWN_STATUS, error.message, code="engine_down")
    return HTTPError(REQUEST_FAILED_STATUS, error.message, code="request_failed")


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
    string) holds its tokens back too (serving/token_alignment.py). A gateway resuming a cut stream
    from the ids it saw then neither loses nor repeats text (vLLM sends each step's ids as they come
    instead).
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
        self._aligner = TokenTextAligner() if req.return_token_ids else None
        self.num_prompt_tokens = len(req.prompt_token_ids)
        self.num_cached_tokens = 0
        self.num_generated_tokens = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None  # vLLM's: the stop string or stop token id hit

    @property
    def usage(self) -> Usage:
        return Usage(self.num_prompt_tokens, self.num_generated_tokens, self.num_cached_tokens)

    async def deltas(self) -> AsyncGenerator[TextDelta, None]:
        """Text deltas until the request finishes; HTTPError (4xx/503) if it fails on the way."""
        start = time.monotonic()
        last_token_at: float | None = None
        engine_iter = self._client.generate(
            GenerateRequest(self._req.request_id, self._req.prompt_token_ids, self._req.sampling))
        try:
            while (delta := await self._next(engine_iter)) is not None:
                if delta.error is not None:
                    raise engine_failure(delta.error)
                if delta.new_token_ids:
                    last_token_at = self._record_timing(start, last_token_at, len(delta.new_token_ids))
                try:
                    out = self._absorb(delta)
                except Exception as exc:
                    raise request_failed(self._req.request_id, exc) from exc
                if out.text or out.finish_reason or out.token_ids:
                    yield out
                if self.finish_reason is not None:
                    return
                if self._is_disconnected():
                    self.finish_reason = "abort"
                    return
            self.finish_reason = self.finish_reason or "abort"  # iterator ended without a reason
        except HTTPError:
            self.finish_reason = "abort"
            raise
        finally:
            await _aclose(engine_iter)
            self._metrics.record_finished(
                num_prompt_tokens=self.num_prompt_tokens, num_generated_tokens=self.num_generated_tokens,
                finish_reason=self.finish_reason or "abort", e2e_s=time.monotonic() - start)

    async def _next(self, engine_iter: AsyncIterator[TokenDelta]) -> TokenDelta | None:
        """The engine's next delta, None at its end; its exceptions as HTTPErrors."""
        try:
            return await anext(engine_iter)
        except StopAsyncIteration:
            return None
        except ValueError as exc:  # the engine refused the request's input
            raise HTTPError(400, str(exc), code="invalid_prompt") from exc
        except Exception as exc:  # the engine client broke, not this request
            logger.exception("engine failed on %s", self._req.request_id)
            raise HTTPError(ENGINE_DOWN_STATUS, f"engine error: {exc}", code="engine_down") from exc

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
        decoded = self._detok.push(delta.new_token_ids)
        text, stopped = self._stops.push(decoded)
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
        if self._aligner is None:
            return TextDelta(text, self.finish_reason)
        return self._with_ids(self._aligner, delta.new_token_ids, decoded, text)

    def _with_ids(self, aligner: TokenTextAligner, new_ids: list[int], decoded: str,
                  text: str) -> TextDelta:
        """return_token_ids: the text and ids the aligner releases (all of them at the end)."""
        if self.finish_reason is not None:
            text, ids = aligner.finish(new_ids, text)
            return TextDelta(text, self.finish_reason, ids)
        num_ids_decoded = self.num_generated_tokens - self._detok.num_held
        text, ids = aligner.step(new_ids, decoded, num_ids_decoded, text)
        return TextDelta(text, None, ids)


async def _aclose(iterator: AsyncIterator[TokenDelta]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
