"""Hypothesis over the gateway's request schema (issue 13): chat and completions bodies of any shape,
with odd headers, sent to a `dpserve router` process in front of a fake replica. For every example:
never a 5xx (but the 508 a request that says it has passed MAX_HOPS gateways gets by design),
never a non-JSON error, never a hang, and the process alive with /health answering.

Fixed seed (derandomize) and a bounded number of examples, so CI runs the same cases each time;
DPSERVE_FUZZ_EXAMPLES=N runs more locally.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpserve.gateway.loop_guard import MAX_HOPS
from dpserve.http_names import HOPS_HEADER, SESSION_HEADER
from tests.conftest import free_port

pytestmark = [pytest.mark.timeout(120)]

EXAMPLES = int(os.environ.get("DPSERVE_FUZZ_EXAMPLES", "150"))
TIMEOUT_S = 10.0  # "never a hang": every answer within this
PATHS = ("/v1/chat/completions", "/v1/completions")

# JSON values of every kind, small: the body's fields get these as often as well-formed ones.
_floats = st.floats(allow_nan=False, allow_infinity=False)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), _floats, st.text(max_size=20))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
_content = st.one_of(st.text(max_size=200), st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "x"]), "text": st.one_of(st.text(max_size=50), _json)}),
    max_size=3), _json)
_roles = st.sampled_from(["system", "user", "assistant", "tool", ""])
_message = st.one_of(st.fixed_dictionaries({"role": _roles, "content": _content}), _json)
_token_ids = st.lists(st.integers(-5, 2**40), max_size=20)
_prompt = st.one_of(st.text(max_size=200), st.lists(st.text(max_size=20), max_size=4), _token_ids,
                    st.lists(_token_ids, max_size=3), _json)
_fields = {
    "model": st.one_of(st.just("fake-model"), st.text(max_size=30), _json),
    "stream": st.one_of(st.booleans(), _json),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), _json),
    "max_tokens": st.one_of(st.integers(-10, 2**40), _json),
    "max_completion_tokens": st.one_of(st.integers(-10, 2**40), _json),
    "temperature": st.one_of(_floats, _json),
    "top_p": st.one_of(_floats, _json),
    "n": _json, "stop": st.one_of(st.lists(st.text(max_size=10), max_size=5), _json), "seed": _json,
    "user": st.one_of(st.text(max_size=40), _json), "ignore_eos": _json, "logprobs": _json,
}


@st.composite
def _body(draw: st.DrawFn, path: str) -> bytes:
    shape = draw(st.sampled_from(["object", "object", "object", "json", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "json":
        return _dumps(draw(_json))
    body: dict[str, Any] = {}
    if path == PATHS[0]:
        body["messages"] = draw(st.one_of(st.lists(_message, min_size=1, max_size=4), _json))
    else:
        body["prompt"] = draw(_prompt)
    for name, strategy in _fields.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    body.update(draw(st.dictionaries(st.text(max_size=10), _json, max_size=3)))
    return _dumps(body)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()  # integers beyond 64 bits too


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
_hops = st.one_of(st.sampled_from(["0", "1", "3", "4"]), _header_text)
_headers = st.fixed_dictionaries({}, optional={
    SESSION_HEADER: _header_text, HOPS_HEADER: _hops,
    "Authorization": _header_text, "Content-Type": _header_text, "x-request-id": _header_text,
    "Content-Encoding": st.sampled_from(["gzip", "identity", "deflate", "br", "gzip, gzip", ""]),
})


@pytest.fixture(scope="module")
def router() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A fake replica and `dpserve router` in front of it, each its own process."""
    replica = subprocess.Popen([sys.executable, "-m", "tests.integration.gateway.fake_worker"],
                               stdout=subprocess.PIPE)
    port = free_port()
    gateway = None
    try:
        assert replica.stdout is not None
        replica_port = int(replica.stdout.readline())
        gateway = subprocess.Popen([sys.executable, "-m", "dpserve", "router", "--port", str(port),
                                    "--log-level", "error", "--worker-urls", f"http://127.0.0.1:{replica_port}"])
        _wait_ready(gateway, port)
        yield gateway, port
    finally:
        for proc in (gateway, replica):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    for _ in range(400):
        assert proc.poll() is None, "router exited"
        try:
            if _get(port, "/readiness")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("router not ready")


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    if headers.get("Content-Encoding") in ("gzip", "gzip, gzip") and len(body) % 2:
        body = gzip.compress(body)  # half of them really are compressed
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_requests_never_break_the_gateway(router: tuple[subprocess.Popen[bytes], int],
                                                 data: st.DataObject) -> None:
    proc, port = router
    path = data.draw(st.sampled_from(PATHS))
    body, headers = data.draw(_body(path)), data.draw(_headers)
    status, content_type, answer = _post(port, path, body, headers)  # raises on a hang (timeout)
    hops = headers.get(HOPS_HEADER, "").strip()
    looped = hops.isdigit() and int(hops) >= MAX_HOPS  # a request claiming to have looped: 508 by design
    assert status < 500 or (looped and status == 508), (status, answer)
    if status >= 400:
        assert content_type == "application/json", answer
        err = orjson.loads(answer)["error"]
        assert set(err) >= {"message", "type", "code"}, answer
    assert proc.poll() is None, "the gateway died"
    assert _get(port, "/health") == (200, b'{"status":"ok"}')
