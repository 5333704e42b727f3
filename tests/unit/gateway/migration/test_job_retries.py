"""ResumeJob when a stream's try is retried because it sent the client nothing: the next try
starts from exactly what the client has (no ids of held-back text, no stale failure)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.migration.job import ResumeJob, StreamBreak
from dpserve.gateway.routing_text import parse_request
from dpserve.http_names import CHAT_PATH
from tests.unit.gateway.proxy_fakes import FakeSink


def ev(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


ENV = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
ERROR = ev({"error": {"message": "engine died", "code": "engine_down"}})
DONE = b"data: [DONE]\n\n"


def chat_token(text: str, ids: list[int], finish: str | None = None) -> bytes:
    return ev({**ENV, "choices": [{"index": 0, "delta": {"content": text} if text else {},
                                   "finish_reason": finish, "token_ids": ids}]})


def cmpl_token(text: str, ids: list[int], finish: str | None = None) -> bytes:
    return ev({"id": "cmpl-2", "object": "text_completion", "created": 2, "model": "m",
               "choices": [{"index": 0, "text": text, "finish_reason": finish, "token_ids": ids}]})


class Upstream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.headers = {"content-type": "text/event-stream"}
        self._chunks = chunks[1:]

    async def next_chunk(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


async def relay(job: ResumeJob, chunks: list[bytes], sink: FakeSink) -> str | None:
    return await job.relay(Upstream(chunks), chunks[0], sink, {}, 0.0)  # type: ignore[arg-type]


def new_job() -> ResumeJob:
    raw = orjson.dumps({"model": "m", "stream": True, "max_tokens": 6,
                        "messages": [{"role": "user", "content": "q"}]})
    return ResumeJob(CHAT_PATH, raw, parse_request(CHAT_PATH, raw, {}), MigrationConfig(),
                     GatewayMetrics("round_robin"), time.monotonic, None)


async def test_a_continuation_try_that_sent_nothing_leaves_no_ids_behind() -> None:
    job, sink = new_job(), FakeSink()
    role = ev({**ENV, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
               "prompt_token_ids": [1, 2]})
    assert await relay(job, [role, chat_token("a", [10]), chat_token("b", [11])], sink) == "incomplete"
    assert not job.sent_nothing(sink)
    job.on_break(StreamBreak("incomplete", None), past_deadline=False)  # type: ignore[arg-type]
    cont = job.continuation()
    assert not isinstance(cont, str) and orjson.loads(cont.body)["prompt"] == [1, 2, 10, 11]
    job.begin_stream(cont)
    # a try that folds an id whose text it holds back, then fails: the client got nothing of it
    assert await relay(job, [cmpl_token("", [12]), ERROR], sink) == "engine_down"
    assert job.sent_nothing(sink) and job.state.output_ids == [10, 11, 12]
    # the retry (same continuation) starts from what the client has
    assert await relay(job, [cmpl_token("c", [12]), cmpl_token("d", [13], "stop"), DONE], sink) is None
    assert job.state.output_ids == [10, 11, 12, 13] and job.state.text == "abcd"
    assert job.usage()["completion_tokens"] == 4


async def test_a_first_try_that_failed_before_its_first_event_leaves_the_client_untouched() -> None:
    job, sink = new_job(), FakeSink()
    comment = b": keep-alive\n\n"
    assert await relay(job, [comment, ERROR], sink) == "engine_down"
    assert job.sent_nothing(sink) and sink.status is None and sink.body == b""
    assert job.state.error == {"message": "engine died", "code": "engine_down"}
    assert await relay(job, [comment, chat_token("x", [5], "stop"), DONE], sink) is None
    assert sink.status == 200 and sink.body.startswith(comment) and job.state.error is None
