"""Issue 14 with fake replicas: a response cut after its first byte continues on another replica
(token-exact with token ids, text-level without), for streams and non-streaming requests; stalls,
health and drains move streams; excluded requests keep the error event; everything is counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from dpserve.http_names import CHAT_PATH, METRICS_PATH, WORKER_HEADER, WORKERS_PATH
from tests.integration.gateway.conftest import chat, eventually


async def _stream(client: Any, url: str, body: dict[str, Any], path: str = CHAT_PATH,
                  headers: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], bool, str | None]:
    """(the JSON events, whether [DONE] ended the stream, x-dpserve-worker)."""
    async with client.post(url + path, json=body, headers=headers) as resp:
        assert resp.status == 200
        data = await resp.read()
    events = [e[6:] for e in data.split(b"\n\n") if e.startswith(b"data: ")]
    done = events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events if e != b"[DONE]"], done, resp.headers.get(WORKER_HEADER)


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))


async def _metrics(client: Any, url: str) -> str:
    async with client.get(url + METRICS_PATH) as resp:
        return str(await resp.text())


async def test_token_exact_continuation_on_another_replica(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=8, token_ids=True)
    a.knobs.die_after_chunks = 4  # the role chunk and 3 tokens, then the replica is gone
    gw = await gateway([a, b], policy="round_robin")
    events, done, worker = await _stream(client, gw.url, chat(stream=True, max_tokens=8,
                                                              stream_options={"include_usage": True}))
    assert done and worker == "w0"
    assert _text(events) == "".join([f"{a.name}-{i} " for i in range(3)] +
                                    [f"{b.name}-{i} " for i in range(3, 8)])
    assert [e["choices"][0]["delta"].get("role") for e in events if e["choices"]].count("assistant") == 1
    assert all(e["id"] == "chatcmpl-1" and e["object"] == "chat.completion.chunk" for e in events)
    assert not any(b"token_ids" in orjson.dumps(e) for e in events)  # asked by the gateway, stripped
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    cont = orjson.loads(b.stats.bodies[-1])
    assert cont["prompt"] == [1, 2, 3, 1000, 1001, 1002] and cont["max_tokens"] == 5
    assert cont["return_token_ids"] and "messages" not in cont
    text = await _metrics(client, gw.url)
    assert 'dpserve_stream_migrations_total{reason="upstream_error",outcome="migrated"} 1' in text
    assert "dpserve_stream_migration_gap_seconds_count 1" in text
    assert 'dpserve_worker_stream_migrations_total{worker="w0"} 1' in text
    assert gw.state.registry.get("w0").in_flight == 0 and gw.state.registry.get("w1").in_flight == 0


async def test_a_replica_whose_engine_went_down_mid_stream_is_left_token_exact(
        fake_workers, gateway, client) -> None:
    """A dpserve replica failing a request mid-stream sends an "abort" finish chunk and an error
    event; with code engine_down the stream moves on, and the client sees neither."""
    a, b = await fake_workers(2, chunks=8, token_ids=True)
    a.knobs.fail_after_chunks, a.knobs.fail_code = 4, "engine_down"
    gw = await gateway([a, b], policy="round_robin")
    events, done, worker = await _stream(client, gw.url, chat(stream=True, max_tokens=8))
    assert done and worker == "w0"
    assert _text(events) == "".join([f"{a.name}-{i} " for i in range(3)] +
                                    [f"{b.name}-{i} " for i in range(3, 8)])
    assert [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]] == ["stop"]
    assert not any("error" in e for e in events)
    text = await _metrics(client, gw.url)
    assert 'dpserve_stream_migrations_total{reason="engine_down",outcome="migrated"} 1' in text
    assert 'dpserve_worker_stream_migrations_total{worker="w0"} 1' in text  # the dashboard's column


async def test_a_request_that_failed_on_its_own_keeps_its_error(fake_workers, gateway, client) -> None:
    """code request_failed: it would fail the same way elsewhere, so it is not migrated."""
    a, b = await fake_workers(2, chunks=8, token_ids=True)
    a.knobs.fail_after_chunks, a.knobs.fail_code = 4, "request_failed"
    gw = await gateway([a, b], policy="round_robin")
    events, done, _ = await _stream(client, gw.url, chat(stream=True, max_tokens=8))
    assert done and "error" in events[-1] and b.stats.requests == 0
    assert _text(events) == "".join(f"{a.name}-{i} " for i in range(3))
    text = await _metrics(client, gw.url)
    assert 'dpserve_stream_migrations_total{reason="request_failed",outcome="request_failed"} 1' in text
    assert 'dpserve_worker_stream_migrations_total{worker="w0"}' not in text


async def test_client_that_asked_for_token_ids_gets_all_of_them(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=6, token_ids=True)
    a.knobs.die_after_chunks = 3
    gw = await gateway([a, b], policy="round_robin")
    events, done, _ = await _stream(client, gw.url, chat(stream=True, return_token_ids=True))
    assert done and events[0]["prompt_token_ids"] == [1, 2, 3]
    ids = [t for e in events for c in e["choices"] for t in c.get("token_ids") or []]
    assert ids == [1000 + i for i in range(6)]


async def test_text_level_continuation_when_replicas_give_no_token_ids(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=5)
    a.knobs.die_after_chunks = 3
    gw = await gateway([a, b], policy="round_robin")
    events, done, _ = await _stream(client, gw.url, chat("q", stream=True, max_tokens=10))
    assert done and _text(events) == "".join([f"{a.name}-{i} " for i in range(3)] +
                                             [f"{b.name}-{i} " for i in range(5)])
    cont = orjson.loads(b.stats.bodies[-1])
    assert cont["messages"][-1] == {"role": "assistant", "content": f"{a.name}-0 {a.name}-1 {a.name}-2 "}
    assert cont["continue_final_message"] and not cont["add_generation_prompt"] and cont["max_tokens"] == 7
    assert 'outcome="text"} 1' in await _metrics(client, gw.url)


async def test_non_streaming_request_resumes_and_gets_one_body(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=8, token_ids=True)
    a.knobs.die_after_chunks = 5
    gw = await gateway([a, b], policy="round_robin", resume_min_tokens=4)
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=8)) as resp:
        assert resp.status == 200 and resp.headers[WORKER_HEADER] == "w1"
        body = await resp.json()
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-1"
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": "".join([f"{a.name}-{i} " for i in range(4)] +
                                                [f"{b.name}-{i} " for i in range(4, 8)])}
    assert body["choices"][0]["finish_reason"] == "stop" and "token_ids" not in body["choices"][0]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert orjson.loads(a.stats.bodies[0])["stream"] is True  # streamed internally


async def test_a_short_non_streaming_request_is_relayed_whole_and_retried_whole(fake_workers, gateway,
                                                                                client) -> None:
    a, b = await fake_workers(2, chunks=8, token_ids=True)
    gw = await gateway([a, b], policy="round_robin", resume_min_tokens=8)
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=8)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "chat.completion" and "token_ids" not in body["choices"][0]
    sent = orjson.loads(a.stats.bodies[0])
    assert sent.get("stream") is not True and "return_token_ids" not in sent  # not armed: as sent
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=9)) as resp:  # over the bound: armed
        assert resp.status == 200
    assert orjson.loads(b.stats.bodies[0])["stream"] is True


async def test_stall_moves_the_stream_and_is_no_verdict_on_the_replica(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=6, token_ids=True)
    a.knobs.stall_after_chunks = 3
    gw = await gateway([a, b], policy="round_robin", stream_stall_timeout_s=0.3)
    started = time.monotonic()
    events, done, _ = await _stream(client, gw.url, chat(stream=True))
    assert done and len(_text(events).split()) == 6 and time.monotonic() - started < 3
    assert 'reason="stall",outcome="migrated"} 1' in await _metrics(client, gw.url)
    await eventually(lambda: a.stats.cancelled == 1)  # the stalled request was closed
    w0 = gw.state.registry.get("w0")
    assert w0.healthy and w0.breaker.state.value == "closed" and w0.in_flight == 0


async def test_replica_marked_down_moves_its_streams_at_once(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=6, token_ids=True)
    a.knobs.stall_after_chunks = 3
    gw = await gateway([a, b], policy="round_robin", stream_stall_timeout_s=60)
    task = asyncio.create_task(_stream(client, gw.url, chat(stream=True)))
    await eventually(lambda: a.stats.active == 1)
    a.knobs.hang = True  # /health stops answering too: a hung process
    events, done, _ = await asyncio.wait_for(task, 10)
    assert done and len(_text(events).split()) == 6
    assert 'reason="replica_down",outcome="migrated"} 1' in await _metrics(client, gw.url)
    a.knobs.hang = False


async def test_drain_timeout_moves_streams_to_finish_elsewhere(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=40, chunk_delay_s=0.05, token_ids=True)
    gw = await gateway([a, b], policy="round_robin", drain_timeout_s=0.3)
    task = asyncio.create_task(_stream(client, gw.url, chat(stream=True)))
    await eventually(lambda: a.stats.active == 1)
    async with client.delete(gw.url + WORKERS_PATH + "/w0") as resp:
        assert resp.status == 204
    events, done, _ = await task
    assert done and len(_text(events).split()) == 40 and b.stats.requests == 1
    assert 'reason="drain",outcome="migrated"} 1' in await _metrics(client, gw.url)


async def test_excluded_and_disabled_keep_the_error_event_and_are_counted(fake_workers, gateway,
                                                                          client) -> None:
    a, b = await fake_workers(2, chunks=6, token_ids=True, die_after_chunks=3)
    gw = await gateway([a, b], policy="round_robin")
    body = chat(stream=True, response_format={"type": "json_object"})
    events, done, _ = await _stream(client, gw.url, body)
    assert done and "mid-stream" in events[-1]["error"]["message"]
    assert 'reason="upstream_error",outcome="excluded"} 1' in await _metrics(client, gw.url)
    off = await gateway([a, b], policy="round_robin", stream_migration=False)
    events, done, _ = await _stream(client, off.url, chat(stream=True))
    assert done and "error" in events[-1]
    assert 'outcome="disabled"} 1' in await _metrics(client, off.url)


async def test_max_migrations_then_the_error_event(fake_workers, gateway, client) -> None:
    workers = await fake_workers(2, chunks=20, token_ids=True, die_after_chunks=3)
    gw = await gateway(workers, policy="round_robin", max_migrations=2)
    events, done, _ = await _stream(client, gw.url, chat(stream=True))
    assert done and "error" in events[-1] and len(_text(events).split()) == 6  # 2 + 2 + 2 tokens
    assert 'outcome="exhausted"} 1' in await _metrics(client, gw.url)


async def test_long_non_streaming_answers_are_not_killed_and_open_no_breaker(fake_workers, gateway,
                                                                             client) -> None:
    workers = await fake_workers(2, chunks=8, chunk_delay_s=0.1, token_ids=True)
    gw = await gateway(workers, policy="round_robin", first_byte_timeout_s=0.3, breaker_failure_threshold=1)
    statuses = []
    for resp_cm in [client.post(gw.url + CHAT_PATH, json=chat()) for _ in range(3)]:
        async with resp_cm as resp:
            statuses.append(resp.status)
    assert statuses == [200, 200, 200] and sum(w.stats.requests for w in workers) == 3
    assert all(w.breaker.state.value == "closed" for w in gw.state.registry.all())


async def test_a_client_that_leaves_is_never_migrated(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=200, chunk_delay_s=0.01, token_ids=True)
    gw = await gateway([a, b], policy="round_robin")
    resp = await client.post(gw.url + CHAT_PATH, json=chat(stream=True))
    await resp.content.readany()
    resp.close()
    await eventually(lambda: a.stats.cancelled == 1 and gw.state.registry.get("w0").in_flight == 0)
    assert b.stats.requests == 0 and "dpserve_stream_migrations_total{" not in await _metrics(client, gw.url)


async def test_sessions_follow_the_migration(fake_workers, gateway, client) -> None:
    for policy in ("consistent_hash", "cache_aware"):
        a, b = await fake_workers(2, chunks=6, token_ids=True)
        gw = await gateway([a, b], policy=policy)
        session = {"x-session-id": "conversation-7"}
        _, _, home = await _stream(client, gw.url, chat("turn one", stream=True), headers=session)
        victim, other = (a, b) if home == "w0" else (b, a)
        victim.knobs.die_after_chunks = 3
        events, done, _ = await _stream(client, gw.url, chat("turn one", stream=True), headers=session)
        assert done and other.stats.requests == 1
        victim.knobs.die_after_chunks = None
        turn_two = {"model": "fake-model", "stream": True, "messages": [
            {"role": "user", "content": "turn one"}, {"role": "assistant", "content": _text(events)},
            {"role": "user", "content": "turn two"}]}
        _, _, served = await _stream(client, gw.url, turn_two, headers=session)
        assert served != home, policy


async def test_a_break_after_the_finish_is_completed_by_the_gateway(fake_workers, gateway, client) -> None:
    """Cut after the last token (before the usage chunk), or after the usage chunk (before
    [DONE]): nothing is left to generate, the gateway ends the stream itself — once."""
    a, b = await fake_workers(2, chunks=4, token_ids=True)
    gw = await gateway([a, b], policy="round_robin")
    body = chat(stream=True, stream_options={"include_usage": True})
    for cut, usage_events in ((6, 1), (7, 1)):  # role, 4 tokens, finish | usage | [DONE]
        a.knobs.die_after_chunks = cut
        events, done, worker = await _stream(client, gw.url, body)
        assert done and worker == "w0" and len(_text(events).split()) == 4
        assert next(e for e in events if "usage" in e)["usage"]["completion_tokens"] == 4
        assert sum(1 for e in events if "usage" in e) == usage_events
        await _stream(client, gw.url, body)  # round robin: the next one goes to w1
    assert b.stats.requests == 2 and 'outcome="completed"} 2' in await _metrics(client, gw.url)


async def test_a_stream_that_moves_twice_after_failures_loses_nothing(fake_workers, gateway, client) -> None:
    """A failure reported by the second replica too (an "abort" finish, an error event): the
    third replica's tokens all reach the client, and its finish."""
    a, b, c = await fake_workers(3, chunks=8, token_ids=True)
    a.knobs.fail_after_chunks = 4  # role + 3 tokens
    c.knobs = b.knobs  # whichever of b and c comes second fails after its role chunk + 2 tokens
    b.knobs.fail_after_chunks, b.knobs.fail_once = 3, True
    gw = await gateway([a, b, c], policy="round_robin")
    events, done, _ = await _stream(client, gw.url, chat(stream=True, max_tokens=8,
                                                         stream_options={"include_usage": True}))
    # the third continuation's prompt holds 2 more answer ids than the second's
    second, third = (b, c) if len(b.stats.bodies[0]) < len(c.stats.bodies[0]) else (c, b)
    assert done and _text(events) == "".join([f"{a.name}-{i} " for i in range(3)] +
                                             [f"{second.name}-{i} " for i in range(3, 5)] +
                                             [f"{third.name}-{i} " for i in range(5, 8)])
    assert [ch["finish_reason"] for e in events for ch in e["choices"] if ch["finish_reason"]] == ["stop"]
    assert events[-1]["usage"]["completion_tokens"] == 8
    assert 'reason="engine_down",outcome="migrated"} 2' in await _metrics(client, gw.url)


async def test_a_non_streaming_answer_after_a_failure_is_whole_and_blames_no_healthy_replica(
        fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=8, token_ids=True)
    a.knobs.fail_after_chunks = 4
    gw = await gateway([a, b], policy="round_robin", resume_min_tokens=4, breaker_failure_threshold=1)
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=8)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "".join(
        [f"{a.name}-{i} " for i in range(3)] + [f"{b.name}-{i} " for i in range(3, 8)])
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 8
    text = await _metrics(client, gw.url)
    assert 'outcome="completed"' not in text and 'reason="error_event"' not in text
    assert gw.state.registry.get("w1").breaker.state.value == "closed"


async def test_a_null_max_completion_tokens_leaves_max_tokens_in_force(fake_workers, gateway, client) -> None:
    """The replicas' rule: max_completion_tokens unless absent or null, else max_tokens."""
    a, b = await fake_workers(2, chunks=8, token_ids=True, die_after_chunks=4)
    b.knobs.die_after_chunks = None
    gw = await gateway([a, b], policy="round_robin")
    await _stream(client, gw.url, chat(stream=True, max_tokens=6, max_completion_tokens=None))
    assert orjson.loads(b.stats.bodies[-1])["max_tokens"] == 3


async def test_failure_events_in_any_shape_or_framing_are_caught(fake_workers, gateway, client) -> None:
    """An error event in the same chunk as the token before it, or in vLLM's older shape alone:
    neither reaches the client, the stream moves on."""
    for knobs in ({"fail_coalesced": True}, {"fail_old_shape": True}):
        a, b = await fake_workers(2, chunks=8, token_ids=True, fail_after_chunks=4, **knobs)
        b.knobs.fail_after_chunks = None
        gw = await gateway([a, b], policy="round_robin")
        events, done, _ = await _stream(client, gw.url, chat(stream=True, max_tokens=8))
        assert done and not any("error" in e or e.get("object") == "error" for e in events), knobs
        assert _text(events) == "".join([f"{a.name}-{i} " for i in range(3)] +
                                        [f"{b.name}-{i} " for i in range(3, 8)]), knobs


async def test_a_token_that_reads_abort_is_only_a_token(fake_workers, gateway, client) -> None:
    a, b = await fake_workers(2, chunks=6, token_ids=True, token_text="abort")
    gw = await gateway([a, b], policy="round_robin", max_migrations=0)
    events, done, _ = await _stream(client, gw.url, chat(stream=True))
    assert done and _text(events) == "abort" * 6 and b.stats.requests == 0
    assert [ch["finish_reason"] for e in events for ch in e["choices"] if ch["finish_reason"]] == ["stop"]
    assert "dpserve_stream_migrations_total{" not in await _metrics(client, gw.url)


async def test_a_cut_after_the_last_allowed_token_still_gets_a_finish_reason(fake_workers, gateway,
                                                                             client) -> None:
    a, b = await fake_workers(2, chunks=4, token_ids=True, die_after_chunks=5)  # role + 4 tokens
    gw = await gateway([a, b], policy="round_robin", resume_min_tokens=1)
    events, done, _ = await _stream(client, gw.url, chat(stream=True, max_tokens=4,
                                                         stream_options={"include_usage": True}))
    assert done and len(_text(events).split()) == 4
    assert [ch["finish_reason"] for e in events for ch in e["choices"] if ch["finish_reason"]] == ["length"]
    assert events[-1]["usage"]["completion_tokens"] == 4
    b.knobs.die_after_chunks = 5
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=4)) as resp:
        body = await resp.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["message"]["content"].split()) == 4


async def test_reasoning_text_is_kept_and_a_cut_inside_it_is_not_resumed(fake_workers, gateway,
                                                                          client) -> None:
    """A reasoning model's `reasoning_content` deltas: a non-streaming answer (streamed
    internally) keeps them; a cut while it is still reasoning cannot be continued as plain text
    (the completions endpoint parses no reasoning), so the client gets the error event."""
    a, b = await fake_workers(2, chunks=6, token_ids=True, reasoning_tokens=2)
    gw = await gateway([a, b], policy="round_robin", resume_min_tokens=1)
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=6)) as resp:
        message = (await resp.json())["choices"][0]["message"]
    assert message == {"role": "assistant", "reasoning_content": f"{a.name}-0 {a.name}-1 ",
                       "content": "".join(f"{a.name}-{i} " for i in range(2, 6))}
    b.knobs.die_after_chunks = 2  # role + one reasoning token
    events, done, _ = await _stream(client, gw.url, chat(stream=True))  # round robin: b serves it
    assert done and "error" in events[-1] and a.stats.requests == 1
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"] == {"reasoning_content": f"{b.name}-0 "}
    assert 'outcome="excluded"} 1' in await _metrics(client, gw.url)


async def test_a_half_closed_streaming_client_still_gets_its_whole_answer(fake_workers, gateway) -> None:
    """A client that shut down its sending side after the request (`nc -N`) keeps reading: its
    stream moves on and ends properly. (Only a write can tell such a client from one that left,
    so a client that leaves while its stream is cut costs the new replica until its first write.)"""
    a, b = await fake_workers(2, chunks=8, token_ids=True, die_after_chunks=4)
    b.knobs.die_after_chunks = None
    gw = await gateway([a, b], policy="round_robin")
    body = orjson.dumps(chat(stream=True))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (CHAT_PATH.encode(), len(body)) + body)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.endswith(b"0\r\n\r\n") and b"data: [DONE]" in data and b"error" not in data
    assert all(f"{b.name}-{i} ".encode() in data for i in range(3, 8)) and b.stats.requests == 1


async def test_a_failure_before_the_first_event_is_retried_whole(fake_workers, gateway, client) -> None:
    """An error event (either shape) or an abort as the very first event, after a comment or not:
    nothing went out (not even the head), so the request is retried on another replica from the
    start; with every replica failing so, the client gets a JSON error with the replica's words."""
    for knobs in ({}, {"fail_old_shape": True}, {"comment_first": True}):
        a, b = await fake_workers(2, chunks=4, token_ids=True, fail_after_chunks=0, **knobs)
        b.knobs.fail_after_chunks = None
        gw = await gateway([a, b], policy="round_robin")
        events, done, worker = await _stream(client, gw.url, chat(stream=True))
        assert done and events[0]["id"] == "chatcmpl-1" and worker == "w1", knobs
        assert events[0]["choices"][0]["delta"]["role"] == "assistant" and "messages" in orjson.loads(
            b.stats.bodies[0]), knobs
        assert _text(events) == "".join(f"{b.name}-{i} " for i in range(4))
        assert "dpserve_stream_migrations_total{" not in await _metrics(client, gw.url)
    a, b = await fake_workers(2, chunks=4, token_ids=True, fail_after_chunks=0, comment_first=True)
    gw = await gateway([a, b], policy="round_robin")
    async with client.post(gw.url + CHAT_PATH, json=chat(stream=True)) as resp:
        assert resp.status == 502 and resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert "failed before its first token (engine_down): failed" in error["message"]


async def test_a_non_streaming_answer_cut_while_thinking_is_retried_whole(fake_workers, gateway,
                                                                          client) -> None:
    a, b = await fake_workers(2, chunks=8, token_ids=True, reasoning_tokens=4, die_after_chunks=3)
    b.knobs.die_after_chunks = None
    gw = await gateway([a, b], policy="round_robin", resume_min_tokens=1)
    async with client.post(gw.url + CHAT_PATH, json=chat(max_tokens=8)) as resp:
        assert resp.status == 200 and resp.headers[WORKER_HEADER] == "w1"
        message = (await resp.json())["choices"][0]["message"]
    assert message["reasoning_content"] == "".join(f"{b.name}-{i} " for i in range(4))
    assert message["content"] == "".join(f"{b.name}-{i} " for i in range(4, 8))


async def test_a_healthy_crlf_stream_is_no_break(fake_workers, gateway, client) -> None:
    a, = await fake_workers(1, chunks=4, token_ids=True, crlf=True)
    gw = await gateway([a])
    async with client.post(gw.url + CHAT_PATH, json=chat(stream=True)) as resp:
        data = await resp.read()
    assert data.endswith(b"data: [DONE]\r\n\r\n") and data.count(b"\r\n\r\n") == 7
    text = await _metrics(client, gw.url)
    assert "dpserve_stream_migrations_total{" not in text and 'status="502"' not in text


async def test_a_request_failure_cut_before_its_blank_line_is_still_relayed(fake_workers, gateway,
                                                                             client) -> None:
    a, b = await fake_workers(2, chunks=8, token_ids=True, fail_after_chunks=4, fail_code="request_failed",
                              fail_unterminated=True)
    gw = await gateway([a, b], policy="round_robin")
    events, done, _ = await _stream(client, gw.url, chat(stream=True))
    assert done and "error" in events[-1] and b.stats.requests == 0
    assert 'reason="request_failed",outcome="request_failed"} 1' in await _metrics(client, gw.url)
