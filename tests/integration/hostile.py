"""Hostile-client checks shared by the sim and engine replica tests: a /health watcher, raw HTTP
helpers, each class of request that once took a replica down, and a request fuzzer."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hypothesis import strategies as st

from dpserve.gateway.config import HealthConfig
from dpserve.json_body import MAX_JSON_COMMAS
from dpserve.serving.limits import RequestLimits

# A replica must answer every probe within the gateway's health timeout, or the gateway marks it down.
HEALTH_TIMEOUT_S = HealthConfig().health_check_timeout_s
LIMITS = RequestLimits()
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def sse_events(self) -> list[str]:
        return [e[6:] for e in self.body.decode().split("\n\n") if e.startswith("data: ")]


def post(url: str, path: str, body: Any, timeout_s: float = 120.0,
         headers: dict[str, str] | None = None) -> Reply:
    """One POST on a fresh connection (a JSON-able body, or bytes sent as they are)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def raw_exchange(url: str, head: bytes, body_chunks: Iterator[bytes] = iter(()),
                 timeout_s: float = 30.0) -> bytes:
    """Send a request head (and body pieces while the server still reads) on a raw socket; return
    what the server answered before closing or going quiet."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed while we were still sending: fine
            pass
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            try:
                piece = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not piece:
                break
            data += piece
        return data


def _complete(data: bytes) -> bool:
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":")[1])
    return head.startswith(b"HTTP/1.1 100")


@dataclass
class HealthWatch:
    """Probes GET /health every 0.1 s from a thread of its own while a test runs."""

    url: str
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        parts = urlsplit(self.url)
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HEALTH_TIMEOUT_S)
            start = time.monotonic()
            try:
                conn.request("GET", "/health")
                status = conn.getresponse().status
                elapsed = time.monotonic() - start
                self.latencies_s.append(elapsed)
                if status != 200 or elapsed > HEALTH_TIMEOUT_S:
                    self.failures.append(f"status {status} after {elapsed:.2f} s")
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__} after {time.monotonic() - start:.2f} s")
            finally:
                conn.close()
            self._stop.wait(0.1)


@contextmanager
def health_watched(url: str) -> Iterator[HealthWatch]:
    """Every /health probe while the block runs must answer 200 within the gateway's timeout."""
    watch = HealthWatch(url)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch._stop.set()
        thread.join(10)
    assert not watch.failures, f"/health missed its {HEALTH_TIMEOUT_S} s timeout: {watch.failures}"
    assert watch.latencies_s, "no /health probe ran"


def assert_serves_normally(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """The replica is alive and answers an ordinary request."""
    if proc is not None:
        assert proc.poll() is None, f"the replica exited with {proc.returncode}"
    reply = post(url, CHAT, {"messages": MESSAGES, "max_tokens": 4})
    assert reply.status == 200, reply.body[:300]
    choice = reply.json()["choices"][0]
    assert choice["message"]["content"] and choice["finish_reason"] in ("stop", "length")


def assert_json_error(reply: Reply, status: int, param: str | None = None) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error.get("param") == param, error
    return dict(error)


# -- the classes of hostile requests ---------------------------------------------------------------
def tiny_temperature_beside_a_normal_request(url: str) -> None:
    """temperature 1e-40 (1/T overflows) with and without top_p/top_k, streamed or not, while
    an ordinary request runs: both answer, nothing dies."""
    variants = [{"temperature": 1e-40}, {"temperature": 1e-38, "top_p": 0.5, "top_k": 5},
                {"temperature": 5e-324, "stream": True},
                {"temperature": 1e-39, "top_k": 1, "stream": True}]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for variant in variants:
            cold = pool.submit(post, url, CHAT, {"messages": MESSAGES, "max_tokens": 4, **variant})
            normal = pool.submit(post, url, CHAT, {"messages": MESSAGES, "max_tokens": 4})
            reply = cold.result()
            assert reply.status == 200, reply.body[:300]
            if variant.get("stream"):
                events = reply.sse_events
                assert events[-1] == "[DONE]"
                chunks = [json.loads(e) for e in events[:-1]]
                assert not any("error" in c for c in chunks), chunks
                text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
                assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            else:
                choice = reply.json()["choices"][0]
                text = choice["message"]["content"]
                assert choice["finish_reason"] in ("stop", "length")
            assert text, f"empty answer for {variant}"
            assert normal.result().status == 200


def stop_lists_beyond_the_limits(url: str) -> None:
    too_many = [f"s{i}" for i in range(LIMITS.max_stop_strings + 1)]
    assert_json_error(post(url, CHAT, {"messages": MESSAGES, "stop": too_many}), 400, "stop")
    too_long = "x" * (LIMITS.max_stop_string_chars + 1)
    assert_json_error(post(url, COMPLETIONS, {"prompt": "hi", "stop": [too_long]}), 400, "stop")
    huge = ["ab" * 200 + str(i) for i in range(50_000)]  # the 21 MB body of the issue, cut to 8 MiB
    body = json.dumps({"prompt": "hi", "stop": huge})[:LIMITS.max_request_bytes - 10]
    body = body[:body.rindex('", "')] + '"]}'
    assert_json_error(post(url, COMPLETIONS, body.encode()), 400, "stop")
    ids = list(range(LIMITS.max_stop_token_ids + 1))
    assert_json_error(post(url, COMPLETIONS, {"prompt": "hi", "stop_token_ids": ids}), 400, "stop_token_ids")


def longest_allowed_stops_over_a_long_output(url: str, max_tokens: int) -> None:
    stops = [("\u2603" * (LIMITS.max_stop_string_chars - 1)) + str(i) for i in range(LIMITS.max_stop_strings)]
    for stream in (False, True):
        reply = post(url, COMPLETIONS, {"prompt": "Once upon a time", "max_tokens": max_tokens,
                                        "ignore_eos": True, "stop": stops, "stream": stream})
        assert reply.status == 200, reply.body[:300]


def oversized_bodies(url: str) -> None:
    limit = LIMITS.max_request_bytes
    for path in (CHAT, COMPLETIONS):
        # announced: refused before a byte of the body is sent
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {limit + 1}\r\n\r\n").encode()
        answer = raw_exchange(url, head)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"error"' in answer and b"--max-request-bytes" in answer
        # Expect: 100-continue: a 413 instead of the go-ahead
        answer = raw_exchange(url, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # chunked: cut off once past the limit, whatever the client still sends
    chunk = b"x" * 65536
    pieces = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // len(chunk) + 64))
    head = (f"POST {COMPLETIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    answer = raw_exchange(url, head, pieces)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def huge_prompts_within_the_body_limit(url: str) -> None:
    text = "hello world " * ((LIMITS.max_request_bytes - 4096) // 12)
    for path, body in ((COMPLETIONS, {"prompt": text, "max_tokens": 2}),
                       (CHAT, {"messages": [{"role": "user", "content": text}], "max_tokens": 2}),
                       (COMPLETIONS, {"prompt": [1] * (MAX_JSON_COMMAS - 10), "max_tokens": 2})):
        error = assert_json_error(post(url, path, body), 400)
        assert "maximum context length" in error["message"]


def json_bombs_under_the_body_limit(url: str) -> None:
    """Bodies just under the size limit made of millions of tiny values (`{}`, `[]`, `"a"`, `1`),
    8 at once: each once took ~0.5 s of the event loop to parse, and 8 stalled /health 4 s. Each is
    refused before it is parsed."""
    size = LIMITS.max_request_bytes - 64
    for element in (b"{}", b"[]", b'"a"', b"1"):
        values = b",".join([element] * (size // (len(element) + 1)))
        body = b'{"prompt":"hi","max_tokens":1,"x":[' + values + b"]}"
        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(post, [url] * 8, [COMPLETIONS] * 8, [body] * 8))
        for reply in replies:
            assert assert_json_error(reply, 400)["code"] == "json_too_complex", element


# -- the fuzzer --------------------------------------------------------------------------------------
# Anything but null (a null max_tokens means "the rest of the context": minutes on a CPU engine).
_STRANGE_VALUE = st.one_of(st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
                           st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                           st.lists(st.integers(), max_size=3),
                           st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
_STRANGE = st.one_of(st.none(), _STRANGE_VALUE)
_TEXT = st.one_of(st.text(max_size=40),
                  st.sampled_from(["", " ", "\x00", "\ud7ff\ue000", "🙂" * 10, "<|im_end|>"]))
_STOP_TEXT = st.one_of(st.text(min_size=1, max_size=8),
                       st.text(min_size=1000, max_size=LIMITS.max_stop_string_chars))
# Every optional field with values the API accepts, extremes included.
_VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.just("smollm2-135m"),
    "stream": st.booleans(),
    "temperature": st.sampled_from([0.0, 5e-324, 1e-40, 1e-38, 1e-5, 0.01, 0.5, 1.0, 2.0, 1e308]),
    "top_p": st.sampled_from([5e-324, 1e-40, 0.01, 0.5, 0.9, 1.0]),
    "top_k": st.sampled_from([-1, 1, 5, 10**9, 2**63]),
    "seed": st.sampled_from([-(2**63), -1, 0, 2**63 - 1]),
    "stop": st.one_of(_STOP_TEXT, st.lists(_STOP_TEXT, max_size=LIMITS.max_stop_strings)),
    "stop_token_ids": st.lists(st.integers(min_value=0, max_value=2**63), max_size=4),
    "ignore_eos": st.booleans(),
    "n": st.just(1),
    "best_of": st.just(1),
    "user": _TEXT,
    "logprobs": st.just(False),
    "unknown_field": _STRANGE,
}


def _with_stream_options(body: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    if body.get("stream") is not True:
        return body
    return {**body, "stream_options": {"include_usage": include_usage}}


def _valid(base: st.SearchStrategy[dict[str, Any]], max_new_tokens: int) -> st.SearchStrategy[dict[str, Any]]:
    fields = st.fixed_dictionaries({"max_tokens": st.integers(min_value=1, max_value=max_new_tokens)},
                                   optional=_VALID_FIELDS)
    body = st.builds(lambda b, f: {**b, **f}, base, fields)
    return st.builds(_with_stream_options, body, st.booleans())


def _corrupted(valid: st.SearchStrategy[dict[str, Any]],
               keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one field set to something strange (never a null max_tokens)."""
    def corrupt(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
        if value is None and key in ("max_tokens", "max_completion_tokens"):
            value = -1
        return {**body, key: value}

    extremes = st.one_of(_STRANGE, st.sampled_from([-1e-40, -1.0, 0, -2, 2**64, 10**6, "", [""], [-1]]))
    return st.builds(corrupt, valid, st.sampled_from(keys), extremes)


def request_bodies(max_new_tokens: int) -> st.SearchStrategy[tuple[str, Any]]:
    """(path, body) over the whole replica request schema: valid bodies (at most `max_new_tokens`
    generated tokens, so a CPU engine stays quick), valid ones with one field made strange, and
    arbitrary JSON."""
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                     "content": st.one_of(_TEXT.filter(bool), st.lists(
                                         st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT}),
                                         min_size=1, max_size=2))})
    chat_base = st.fixed_dictionaries({"messages": st.lists(message, min_size=1, max_size=3)})
    prompt = st.one_of(_TEXT.filter(str.strip), st.lists(st.integers(min_value=0, max_value=49_151),
                                                         min_size=1, max_size=8))
    completion_base = st.fixed_dictionaries({"prompt": prompt})
    keys = [*_VALID_FIELDS, "max_tokens", "max_completion_tokens", "stream_options", "echo", "suffix"]
    bodies = []
    for path, base, body_key in ((CHAT, chat_base, "messages"), (COMPLETIONS, completion_base, "prompt")):
        valid = _valid(base, max_new_tokens)
        bodies += [st.tuples(st.just(path), valid),
                   st.tuples(st.just(path), _corrupted(valid, [*keys, body_key]))]
    return st.one_of(*bodies, st.tuples(st.sampled_from([CHAT, COMPLETIONS]), _STRANGE))


def check_fuzzed_reply(path: str, body: Any, reply: Reply) -> None:
    """Never a 5xx, never a non-JSON error; a 200 stream ends with [DONE]."""
    assert reply.status < 500, (path, body, reply.status, reply.body[:300])
    if reply.status != 200:
        assert reply.headers.get("content-type", "").startswith("application/json"), reply.body[:300]
        assert reply.json()["error"]["message"]
    elif reply.headers.get("content-type", "").startswith("text/event-stream"):
        assert reply.sse_events[-1] == "[DONE]", reply.body[-300:]
    else:
        assert reply.json()["choices"]
