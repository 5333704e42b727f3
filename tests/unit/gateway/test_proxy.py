"""The proxy over a scripted upstream pool, a recording sink and a fake clock: retries before the
first byte only, breaker and health verdicts, a client that leaves, one 503 per outage, headers."""

from __future__ import annotations

import orjson
import pytest

from dpserve.errors import HTTPError
from dpserve.http_names import CHAT_PATH, HOPS_HEADER, SESSION_HEADER, WORKER_HEADER
from tests.unit.gateway.proxy_fakes import BROKEN, NO_HEAD, REFUSE, Answer, FakeSink, make_rig

A, B = "http://a:1", "http://b:1"
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})


def _retries(rig, reason: str) -> int:  # type: ignore[no-untyped-def]
    return int(rig.metrics.retries[(reason,)])


@pytest.mark.parametrize("failure, reason, marked_down, verdict", [
    (REFUSE, "connect_error", True, "failure"),
    (NO_HEAD, "first_byte_timeout", False, "neutral"),  # a timeout: health probes judge the replica
    (BROKEN, "upstream_error", False, "failure"),
    (Answer(503, b'{"error": {"message": "busy"}}'), "status_503", False, "failure"),
], ids=["refused", "no-head", "broken", "503"])
async def test_a_failure_before_the_first_byte_is_retried_on_another_replica(
        failure: object, reason: str, marked_down: bool, verdict: str) -> None:
    rig = make_rig({A: [failure], B: [Answer()]})  # type: ignore[list-item]
    sink = FakeSink()
    await rig.proxy.handle(CHAT_PATH, {}, BODY, sink)
    assert (sink.status, sink.headers[WORKER_HEADER]) == (200, "w1")
    assert [s[0] for s in rig.upstream.sent] == [A, B] and _retries(rig, reason) == 1
    assert rig.breaker(0).verdicts == [verdict] and rig.breaker(1).verdicts == ["success"]
    assert rig.health.refused == (["w0"] if marked_down else [])
    assert all(w.in_flight == 0 for w in rig.workers)


async def test_a_stream_that_breaks_after_its_first_chunk_is_not_retried() -> None:
    rig = make_rig({A: [Answer(chunks=(b"data: 1\n\n",), then="break")], B: [Answer()]})
    sink = FakeSink()
    await rig.proxy.handle(CHAT_PATH, {}, STREAM, sink)
    assert sink.body.startswith(b"data: 1\n\n") and b'"error"' in sink.body
    assert sink.body.endswith(b"data: [DONE]\n\n") and sink.ended
    assert [s[0] for s in rig.upstream.sent] == [A] and rig.breaker(0).verdicts == ["failure"]
    assert rig.upstream.responses[0].closed and not rig.upstream.responses[0].released


async def test_a_stream_that_ends_before_its_first_chunk_is_retried() -> None:
    rig = make_rig({A: [Answer(chunks=(), then="end")], B: [Answer(chunks=(b"data: x\n\n",))]})
    sink = FakeSink()
    await rig.proxy.handle(CHAT_PATH, {}, STREAM, sink)
    assert sink.headers[WORKER_HEADER] == "w1" and sink.body == b"data: x\n\n"
    assert _retries(rig, "upstream_error") == 1 and rig.breaker(1).verdicts == ["success"]
    assert rig.upstream.responses[1].released


@pytest.mark.parametrize("status, verdict", [(400, "success"), (404, "success"), (500, "failure")])
async def test_a_final_status_is_relayed_once_with_its_verdict(status: int, verdict: str) -> None:
    rig = make_rig({A: [Answer(status, b'{"error": {"message": "x"}}')], B: [Answer()]})
    sink = FakeSink()
    await rig.proxy.handle(CHAT_PATH, {}, BODY, sink)
    assert sink.status == status and [s[0] for s in rig.upstream.sent] == [A]
    assert rig.breaker(0).verdicts == [verdict]


async def test_a_client_that_leaves_mid_stream_gives_no_verdict_and_closes_upstream() -> None:
    rig = make_rig({A: [Answer(chunks=(b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"))]})
    await rig.proxy.handle(CHAT_PATH, {}, STREAM, FakeSink(gone_after_writes=1))
    assert rig.breaker(0).verdicts == ["neutral"] and rig.workers[0].in_flight == 0
    assert rig.upstream.responses[0].closed and not rig.upstream.responses[0].released


async def test_the_last_replica_dying_is_the_same_503_as_no_replica() -> None:
    rig = make_rig({A: [REFUSE]})
    with pytest.raises(HTTPError) as during:
        await rig.proxy.handle(CHAT_PATH, {}, BODY, FakeSink())
    with pytest.raises(HTTPError) as after:
        await rig.proxy.handle(CHAT_PATH, {}, BODY, FakeSink())
    for err in (during.value, after.value):
        assert (err.status, err.code, err.headers.get("Retry-After")) == (503, "no_healthy_worker", "1")
    assert rig.health.refused == ["w0"]


async def test_retries_end_with_the_last_failure_when_replicas_keep_failing() -> None:
    rig = make_rig({A: [Answer(503), Answer(503)], B: [Answer(503), Answer(503)]}, max_retries=2)
    with pytest.raises(HTTPError) as exc:
        await rig.proxy.handle(CHAT_PATH, {}, BODY, FakeSink())
    assert exc.value.status == 503 and exc.value.headers[WORKER_HEADER] in ("w0", "w1")
    assert len(rig.upstream.sent) == 3 and rig.metrics.retries_exhausted[()] == 1
    assert _retries(rig, "status_503") == 2


async def test_retries_stop_at_the_request_deadline() -> None:
    rig = make_rig({A: [NO_HEAD], B: [Answer()]}, request_timeout_s=10.0)
    original = rig.upstream.post

    async def slow_post(*args, **kwargs):  # type: ignore[no-untyped-def]
        rig.clock.advance(11.0)  # the first try used up the whole request budget
        return await original(*args, **kwargs)
    rig.upstream.post = slow_post  # type: ignore[method-assign]
    with pytest.raises(HTTPError) as exc:
        await rig.proxy.handle(CHAT_PATH, {}, BODY, FakeSink())
    assert exc.value.status == 504 and [s[0] for s in rig.upstream.sent] == [A]


async def test_the_tenants_key_stays_here_and_the_replica_gets_its_own_and_the_hop_count() -> None:
    rig = make_rig({A: [Answer()]}, replica_api_key="replica-secret")
    headers = {"Authorization": "Bearer tenant-secret", SESSION_HEADER: "s1", HOPS_HEADER: "1"}
    await rig.proxy.handle(CHAT_PATH, headers, BODY, FakeSink())
    sent = rig.upstream.sent[0][3]
    assert sent["Authorization"] == "Bearer replica-secret" and "tenant-secret" not in str(sent)
    assert sent[HOPS_HEADER] == "2" and sent[SESSION_HEADER] == "s1"


@pytest.mark.parametrize("hops, status", [("4", 508), ("x", 400), ("99999", 400)])
async def test_a_request_that_looped_through_gateways_is_refused(hops: str, status: int) -> None:
    rig = make_rig({A: [Answer()]})
    with pytest.raises(HTTPError) as exc:
        await rig.proxy.handle(CHAT_PATH, {HOPS_HEADER: hops}, BODY, FakeSink())
    assert exc.value.status == status and rig.upstream.sent == []
