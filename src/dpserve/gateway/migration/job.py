"""ResumeJob: one client response that may span several replicas' streams.

Created when the proxy arms a request; it relays every stream the proxy hands it (`relay`): the
first stream of a streaming client as bytes (recorded, filtered; parsed only after a break),
each later one spliced into the client's shape chunk by chunk, and every stream of a
non-streaming client collected into one JSON body. After a break the job decides
(`retry.decide_break`) and builds the continuation (continuation.py); the proxy sends it like any
request. A replica reporting a failure mid-stream (a finish reason `abort`, an error event) is a
break too: neither reaches the client, and the error's code says whether another replica may
continue (`engine_down`) or the request failed on its own (`request_failed`, relayed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from dpserve.errors import HTTPError, error_body
from dpserve.gateway.aliases import StreamRenamer
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.migration.continuation import (
    Continuation,
    Mode,
    build_continuation,
    generated_count,
    remaining_tokens,
)
from dpserve.gateway.migration.output import ClientShape, usage_json
from dpserve.gateway.migration.relay_filter import (
    FAILURE_MARKS,
    EventGate,
    failure_start,
    may_hold_failure,
    strip_token_ids,
)
from dpserve.gateway.migration.stream_record import StreamRecord
from dpserve.gateway.migration.stream_state import Piece, StreamState, parse_piece
from dpserve.gateway.retry import BreakDecision, BreakFacts, Broke, decide_break, error_event_reason
from dpserve.gateway.routing_text import ParsedRequest
from dpserve.gateway.sse import DONE_EVENT, DONE_EVENT_CRLF, event_end, event_payloads
from dpserve.gateway.upstream import UpstreamResponse
from dpserve.gateway.usage import StreamTail, Usage
from dpserve.gateway.worker import Worker
from dpserve.http_names import CHAT_PATH

logger = logging.getLogger(__name__)

# Appended to the client's JSON object (the last duplicate key wins in every JSON parser the
# replicas use), so arming costs one copy of the body, not a parse and a dump.
_ARM_STREAM = b',"return_token_ids":true}'
_ARM_WHOLE = b',"stream":true,"stream_options":{"include_usage":true},"return_token_ids":true}'
# What is read of a failed stream after its failure mark, looking for the error event's reason.
_FAILURE_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class StreamBreak:
    """A stream that broke after its first byte reached the gateway."""

    reason: str
    worker: Worker
    detail: str = ""


def armed_body(raw: bytes, client_stream: bool) -> bytes:
    """The body sent upstream: token ids asked for; a non-streaming request streamed internally."""
    return raw.rstrip()[:-1] + (_ARM_STREAM if client_stream else _ARM_WHOLE)


class ResumeJob:
    """State of one armed request across its streams; see the module docstring."""

    def __init__(self, path: str, original: bytes, parsed: ParsedRequest, config: MigrationConfig,
                 metrics: GatewayMetrics, clock: Callable[[], float], renamer: StreamRenamer | None) -> None:
        self.path = path
        self._original = original  # as the client sent it (the served name if it used an alias)
        self.facts = parsed.resume
        self.client_stream = parsed.stream
        self._alias = parsed.alias
        self._route_text = parsed.route.text
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self.state = StreamState()
        self.record: StreamRecord | None = StreamRecord(self.state, first_stream=True)
        self.later_streams = 0  # streams after the first
        self.mode: Mode = "token"
        self._base_generated = 0  # tokens generated before the current stream
        self._base_ids = 0  # ... their ids
        self._break: StreamBreak | None = None
        self._break_at = 0.0
        self._gap_open = False
        self._tries = 0  # relays of the current stream: more than one after a failure before its first byte
        self._shape: ClientShape | None = None
        self._renamer = renamer  # the alias back in a relayed stream's events

    # --- after a break -------------------------------------------------------------------------

    def on_break(self, brk: StreamBreak, past_deadline: bool) -> BreakDecision:
        """Settle what the client has, and decide; outcomes other than a migration are counted here."""
        if self.record is not None:
            self.record.settle()
        self._break, self._break_at = brk, self._clock()
        verdict = decide_break(BreakFacts(
            Broke.REQUEST_TIMEOUT if past_deadline else brk.reason, enabled=True,
            excluded=self.facts.excluded or ("reasoning" if self.state.side_text_unresumable else None),
            migrations=self.later_streams, max_migrations=self._config.max_migrations,
            finished=self.state.finish_reason is not None,
            remaining_tokens=remaining_tokens(self._body(), self.path, self.state)))
        if verdict.outcome:
            self.count(brk.reason, verdict.outcome)
        return verdict

    def continuation(self) -> Continuation | str:
        return build_continuation(self._body(), self.path, self.state, self._route_text)

    def begin_stream(self, cont: Continuation) -> None:
        """Before the continuation is sent: a fresh stream's bookkeeping."""
        self.later_streams += 1
        self.mode = cont.mode
        self._base_generated = generated_count(self.state)
        self._base_ids = len(self.state.output_ids)
        self._tries = 0
        self._clean_stream()
        self._gap_open = self.client_stream

    def _clean_stream(self) -> None:
        """A later stream's bookkeeping: what the client has stays, what the last stream said of its
        own end goes."""
        st = self.state
        st.error, st.done, st.usage, st.aborted = None, False, None, False
        self.record = None if self.client_stream else StreamRecord(st, first_stream=False)

    def sent_nothing(self, sink: ResponseSink) -> bool:
        """The stream that just ended gave the client nothing (not even the head) — or, for a
        non-streaming client, nothing that could be continued (no token yet, or thinking without
        its content): the try is then retried like a failure before its first byte, not resumed."""
        if self.client_stream:
            return self._gap_open if self.later_streams else not sink.started
        if self.record is not None:  # what was collected of the stream
            self.record.settle()
        st = self.state
        return ((generated_count(st) == self._base_generated and st.finish_reason is None)
                or st.side_text_unresumable)

    def on_resumed(self, worker: Worker) -> None:
        """The continuation gave the client something: count it and log both replicas."""
        assert self._break is not None
        brk = self._break
        self.count(brk.reason, "migrated" if self.mode == "token" else "text")
        self._metrics.worker_migrations[(brk.worker.id,)] += 1  # the dashboard's column
        logger.warning("response %s moved from replica %s to %s (%s%s) after %d tokens, %s-level",
                       self.state.id, brk.worker.id, worker.id, brk.reason,
                       f": {brk.detail}" if brk.detail else "", self._base_generated, self.mode)

    def count(self, reason: str, outcome: str) -> None:
        self._metrics.migrations[(reason, outcome)] += 1

    # --- relaying a stream ----------------------------------------------------------------------

    async def relay(self, resp: UpstreamResponse, first: bytes, sink: ResponseSink, head: dict[str, str],
                    started: float) -> str | None:
        """Relay one upstream stream to its end: None when it completed the response, else the
        break reason. Transport errors and a client's disconnect propagate (the proxy names them).
        `head`: headers for the client (the worker's); `started`: the relay's start, for TTFT."""
        if self._tries:  # the stream's last try sent nothing (`sent_nothing`): start it afresh
            if self.later_streams:
                self._clean_stream()
                del self.state.output_ids[self._base_ids:]  # ids of held-back text, never sent
            else:
                self.state = StreamState()
                self.record = StreamRecord(self.state, first_stream=True)
        self._tries += 1
        if not self.client_stream:
            return await self._collect(resp, first)
        if self.later_streams:
            return await self._splice(resp, first, sink)
        return await self._pass_through(resp, first, sink, head, started)

    async def _start(self, resp: UpstreamResponse, sink: ResponseSink, head: dict[str, str],
                     started: float) -> None:
        await sink.start({"Content-Type": resp.headers.get("content-type", "text/event-stream"),
                          "Cache-Control": "no-cache", **head})
        self._metrics.ttft.observe(self._clock() - started)  # its first event is written next

    async def finish(self, sink: ResponseSink, head: dict[str, str]) -> None:
        """The response is complete: end the stream, or send the whole body."""
        if self.client_stream:
            await sink.end()
        else:
            await sink.whole(200, {"Content-Type": "application/json", **head}, self.whole_body())

    async def _pass_through(self, resp: UpstreamResponse, chunk: bytes, sink: ResponseSink,
                            head: dict[str, str], started: float) -> str | None:
        """The first stream of a streaming client: relayed as it comes (like the unarmed relay)
        plus the record, whole events only, the token-id strip and the failure check — ~0.5 µs a
        chunk more than the unarmed relay here (benchmarks.md). Nothing, not even the head, goes
        out before the first whole event that is no failure (comments before it wait with it)."""
        record, renamer, gate = self.record, self._renamer, EventGate()
        assert record is not None
        strip = None if self.facts.wants_token_ids else strip_token_ids
        last, add = chunk, record.add
        waiting: bytes | None = b""  # comments before the first event; None once the head went out
        abort_mark, error_mark = FAILURE_MARKS  # may_hold_failure, inline: no call per chunk
        while chunk:
            data = gate.pass_whole(chunk) if gate.held or not chunk.endswith(b"\n\n") else chunk
            if ((data.find(abort_mark) >= 0 or data.find(error_mark) >= 0)
                    and (cut := failure_start(data)) >= 0):
                return await self._failed(resp, data, cut, gate.held, sink, strip, head, started)
            if waiting is not None:  # nothing went out yet
                if data.find(b"data:") < 0:  # no event: comments at most
                    waiting += data
                    last, chunk = chunk, await resp.next_chunk()
                    continue
                await self._start(resp, sink, head, started)
                data, waiting = waiting + data, None
            add(data)
            if strip is not None:
                data = strip(data)
            await sink.write(data if renamer is None else renamer.feed(data))
            last, chunk = chunk, await resp.next_chunk()
        if last.endswith(DONE_EVENT) or last.endswith(DONE_EVENT_CRLF):
            return None
        held = gate.held + b"\n\n"  # an event the end of the stream cut short: a failure, maybe
        if may_hold_failure(held) and (cut := failure_start(held)) >= 0:
            return await self._failed(resp, held, cut, b"", sink, strip, head, started)
        return Broke.INCOMPLETE

    async def _failed(self, resp: UpstreamResponse, data: bytes, cut: int, held: bytes, sink: ResponseSink,
                      strip: Callable[[bytes], bytes] | None, head: dict[str, str], started: float) -> str:
        """The replica reported a failure at `data[cut:]` (whole events; `held`: the start of the
        next one): relay (and record) the events before it, read the rest without relaying it,
        and name the break by the error event's code."""
        if cut and not sink.started and data.find(b"data:", 0, cut) < 0:
            cut = 0  # comments at most before the failure: nothing goes out
        if cut:
            if not sink.started:
                await self._start(resp, sink, head, started)
            assert self.record is not None
            self.record.add(data[:cut])
            before = data[:cut] if strip is None else strip(data[:cut])
            await sink.write(before if self._renamer is None else self._renamer.feed(before))
        tail = [data[cut:], held]
        size, ended = len(tail[0]) + len(held), False
        while size < _FAILURE_TAIL_BYTES:
            more = await resp.next_chunk()
            if not more:
                ended = True
                break
            tail.append(more)
            size += len(more)
        data = b"".join(tail)
        # Read to its end, the last event counts even without its blank line.
        for payload in event_payloads(data + b"\n\n" if ended else data[:event_end(data)]):
            piece = parse_piece(payload)
            if piece is not None and piece.error is not None:
                self.state.error = piece.error  # its message, for a failure before the first event
                return error_event_reason(piece.error)
        return Broke.ERROR_EVENT

    async def _collect(self, resp: UpstreamResponse, chunk: bytes) -> str | None:
        record = self.record
        assert record is not None
        while chunk:
            record.add(chunk)
            chunk = await resp.next_chunk()
        record.settle()
        return self._end_reason()

    async def _splice(self, resp: UpstreamResponse, first: bytes, sink: ResponseSink) -> str | None:
        held, chunk = b"", first
        while chunk:
            data = held + chunk if held else chunk
            end = event_end(data)
            held = data[end:]
            out = []
            for payload in event_payloads(data[:end]):
                piece = parse_piece(payload)
                if piece is not None:
                    out.append(self._spliced(piece))
            await self._write(sink, b"".join(out))
            if self.state.error is not None:
                return self._end_reason()
            chunk = await resp.next_chunk()
        reason = self._end_reason()
        if reason is None:
            await sink.write(self.final_bytes())
        return reason

    def _spliced(self, piece: Piece) -> bytes:
        self.state.add(piece, first_stream=False)
        if self.state.aborted:  # the replica failed: nothing more goes out from this stream
            return b""
        if piece.text or piece.finish_reason is not None or (self.facts.wants_token_ids and piece.token_ids):
            return self.shape.chunk(piece.text, piece.token_ids, piece.finish_reason, piece.stop_reason)
        return b""  # a role chunk, the usage event, [DONE]: the gateway writes its own

    async def _write(self, sink: ResponseSink, data: bytes) -> None:
        if not data:
            return
        await sink.write(data)
        if self._gap_open:
            self._gap_open = False
            self._metrics.migration_gap.observe(self._clock() - self._break_at)

    def _end_reason(self) -> str | None:
        if self.state.error is not None:
            return error_event_reason(self.state.error)
        if self.state.aborted:
            return Broke.ERROR_EVENT
        return Broke.INCOMPLETE if self.state.finish_reason is None else None

    # --- the end of the response ---------------------------------------------------------------

    async def end(self, verdict: BreakDecision, brk: StreamBreak, sink: ResponseSink,
                  head: dict[str, str]) -> HTTPError | None:
        """No migration after `brk`: finish the response here (nothing was left to generate), or
        end it with the error event — returned instead for a non-streaming client (nothing was
        sent to it yet)."""
        if verdict.action == "finish":
            if self.state.finish_reason is None:  # cut after its last token, before the finish chunk
                self.state.finish_reason = "length"
                if self.client_stream:
                    await sink.write(self.shape.chunk("", [], "length"))
            if self.client_stream:
                await sink.write(self.final_bytes())
            await self.finish(sink, head)
            return None
        status = 504 if verdict.outcome == Broke.REQUEST_TIMEOUT else 502
        message = (f"replica {brk.worker.id} timed out mid-stream" if status == 504 else
                   f"replica {brk.worker.id} failed mid-stream ({brk.reason}) and the response could "
                   f"not be continued elsewhere ({verdict.outcome})")
        if not self.client_stream:
            return HTTPError(status, message, headers=head)
        await sink.write(b"data: " + orjson.dumps(error_body(status, message)) + b"\n\n" + DONE_EVENT)
        await sink.end()
        return None

    @property
    def shape(self) -> ClientShape:
        if self._shape is None:
            st = self.state
            self._shape = ClientShape("chat" if self.path == CHAT_PATH else "completion", st.id, st.created,
                                      self._alias or st.model, self.facts.wants_token_ids,
                                      self.facts.include_usage)
        return self._shape

    def final_bytes(self) -> bytes:
        """What ends a stream the gateway completes: the usage chunk if asked for, [DONE] — minus
        what the first replica already relayed (later streams' own usage and [DONE] never are)."""
        relayed = self.later_streams == 0
        if relayed and self.state.done:
            return b""
        if not self.facts.include_usage or (relayed and self.state.usage is not None):
            return DONE_EVENT
        return self.shape.usage_chunk(self.usage()) + DONE_EVENT

    def whole_body(self) -> bytes:
        return self.shape.whole(self.state, self.usage())

    def usage(self) -> dict[str, Any]:
        """The original prompt and every completion token once, over all streams. Exact with
        token ids; text-level counts one token per chunk before the last stream."""
        st, last = self.state, self.state.usage or {}
        if self.later_streams == 0 and st.usage is not None:
            return st.usage
        cached = (last.get("prompt_tokens_details") or {}).get("cached_tokens")
        if not st.ids_missing and st.prompt_ids is not None:
            return usage_json(len(st.prompt_ids), len(st.output_ids), cached)
        last_completion = last.get("completion_tokens")
        completion = (self._base_generated + last_completion if isinstance(last_completion, int)
                      else generated_count(st))
        prompt = (len(st.prompt_ids) if st.prompt_ids is not None
                  else max(0, int(last.get("prompt_tokens") or 0) - self._base_generated))
        return usage_json(prompt, completion, cached)

    def usage_counts(self) -> tuple[int, int]:
        usage = self.usage()
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)

    def usage_into(self, usage: Usage) -> None:
        """Once the response is complete, its tokens for admission's accounting: a relayed
        stream's own usage event, read from its last chunks (no parse of the record), else the
        count over all streams."""
        if self.client_stream and self.later_streams == 0 and self.record is not None:
            if self.state.usage is not None:  # folded early with the rest of a long stream
                usage.take(self.state.usage)
                return
            tail = StreamTail()
            for chunk in self.record.last_chunks(3):
                tail.add(chunk)
            tail.usage_into(usage)
        else:
            usage.prompt_tokens, usage.completion_tokens = self.usage_counts()

    def _body(self) -> dict[str, Any]:
        body = orjson.loads(self._original)
        assert isinstance(body, dict)
        return body
