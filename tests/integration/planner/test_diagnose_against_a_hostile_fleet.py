"""`plan --diagnose` against a broken or hostile gateway and replicas on 127.0.0.1: every answer is
a clear verdict or one line with exit 1 or 2, never a traceback, within a bounded time, with sane
numbers and finite JSON (review_plan findings 10 and 11)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from dpserve.cli import main
from dpserve.diagnosis import State
from dpserve.planner import diagnose
from dpserve.planner.diagnose import FleetUnreachable, diagnose_url, diagnosis_json, diagnosis_text
from tests.integration.planner.fake_fleet import serving

GOOD = ("vllm:num_requests_running 3\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.2\n"
        "vllm:generation_tokens_total {n}\n")
SHORT_TIMEOUT_S = 0.3

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _metrics_mode(mode: str, n: int) -> web.Response:
    if mode == "nan":
        return web.Response(text="vllm:num_requests_running NaN\nvllm:kv_cache_usage_perc +Inf\n"
                                 "dpserve:max_num_seqs 1e308\nvllm:generation_tokens_total NaN\n")
    if mode == "neg":
        return web.Response(text=f"vllm:num_requests_running -5\nvllm:kv_cache_usage_perc -1\n"
                                 f"vllm:generation_tokens_total {-1000 * n}\n"
                                 f"vllm:num_preemptions_total {-10 * n}\n")
    if mode == "nonutf8":
        return web.Response(body=b"vllm:num_requests_running 3\n\xff\xfe\n",
                            headers={"Content-Type": "text/plain; charset=utf-8"})
    if mode == "bomb":  # 20 MiB of zeros in ~20 KB: inflates past the 8 MiB cap
        return web.Response(body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
    return web.Response(text=GOOD.format(n=100 * n))


BOMB = gzip.compress(b"0" * (20 * 2**20), compresslevel=9)


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    """/<mode>/workers lists /<mode>/r0 and /<mode>/r1 unless the mode says otherwise;
    /<mode>/r<i>/metrics answers per the mode ("slowmetrics" never answers r1)."""
    count = {"n": 0}

    async def workers(request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        base = f"http://127.0.0.1:{request.url.port}/{mode}"
        listed: Any = [{"id": f"r{i}", "url": f"{base}/r{i}", "healthy": True} for i in range(2)]
        if mode == "dupids":
            listed = [{"id": "x", "url": f"{base}/r0", "healthy": True},
                      {"id": "x", "url": f"{base}/r1", "healthy": False}]
        elif mode == "many":
            listed = [{"id": f"r{i}", "url": f"{base}/r{i}", "healthy": True} for i in range(5)]
        elif mode == "deep":
            return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
        elif mode == "wnonutf8":
            return web.Response(body=b'[{"url": "\xff", "healthy": true}]', content_type="application/json")
        elif mode == "huge":
            return web.Response(body=b'[{"url": "' + b"a" * (9 * 2**20) + b'"}]',
                                content_type="application/json")
        elif mode == "slow":
            await asyncio.sleep(30)
        elif mode == "keyed" and request.headers.get("Authorization") != "Bearer k":
            raise web.HTTPUnauthorized()
        return web.json_response(listed)

    async def metrics(request: web.Request) -> web.StreamResponse:
        mode, replica = request.match_info["mode"], request.match_info["replica"]
        count["n"] += 1
        if mode == "slowmetrics" and replica == "r1":
            await asyncio.sleep(30)
        return _metrics_mode(mode, count["n"])

    async with serving(workers, metrics, prefix="/{mode}") as url:
        yield url


def _finite_json(obj: Any) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"non-finite {constant} in the JSON")

    return json.loads(orjson.dumps(obj), parse_constant=reject)


async def test_non_finite_and_negative_metrics_give_sane_numbers(hostile: str) -> None:
    for mode in ("nan", "neg"):
        d, windows = await diagnose_url(f"{hostile}/{mode}", admin_key=None, window_s=0.2, scrapes=3)
        for w in windows:
            assert w.running >= 0 and 0 <= w.kv_cache_usage <= 1 and w.max_num_seqs is None
            assert w.generation_tokens_per_s >= 0 and w.preemptions_per_s >= 0
        # negative gauges read as 0: idle; all of them NaN: the load is unknown, not zero
        assert d.fleet.state is (State.IDLE if mode == "neg" else State.NO_METRICS), d.fleet.message
        doc = _finite_json(diagnosis_json(d, windows))
        if mode == "nan":  # unknown, not zero: a zero reads as an idle replica
            assert all(w["running"] is None and w["kv_cache_usage"] is None for w in doc["windows"])
            assert all(r["evidence"] == {} for r in doc["replicas"])
        running = diagnosis_text(d, windows).split("\n")[1].split()[2]
        assert running == "-" or not running.startswith("-")  # unknown, or not negative


async def test_non_utf8_bodies_are_read(hostile: str) -> None:
    d, windows = await diagnose_url(f"{hostile}/nonutf8", admin_key=None, window_s=0.2, scrapes=2)
    assert [w.running for w in windows] == [3.0, 3.0] and d.fleet.state is State.OK


async def test_a_gzip_bomb_stops_at_the_cap(hostile: str) -> None:
    d, windows = await diagnose_url(f"{hostile}/bomb", admin_key=None, window_s=0.2, scrapes=2)
    assert [f.state for f in d.replicas] == [State.NO_METRICS, State.NO_METRICS]
    assert windows[0].metrics_error == "the answer is larger than 8 MiB"


@pytest.mark.parametrize(("mode", "message"), [
    ("deep", "/deep/workers did not answer JSON"),
    ("huge", "cannot read http://127.0.0.1:{port}/huge/workers: the answer is larger than 8 MiB"),
])
async def test_an_unreadable_worker_list_is_one_clear_line(hostile: str, mode: str, message: str) -> None:
    with pytest.raises(FleetUnreachable) as info:
        await diagnose_url(f"{hostile}/{mode}", admin_key=None, window_s=0.2, scrapes=2)
    assert message.format(port=hostile.rsplit(":", 1)[1]) in str(info.value)


async def test_a_worker_list_that_is_not_utf8(hostile: str) -> None:
    d, windows = await diagnose_url(f"{hostile}/wnonutf8", admin_key=None, window_s=0.2, scrapes=2)
    assert d.replicas[0].state is State.NO_METRICS and windows[0].replica_id == "#0"
    assert windows[0].metrics_error == "its /workers entry has no http(s) URL"


async def test_repeated_ids_keep_the_healthy_replica_healthy(hostile: str) -> None:
    d, windows = await diagnose_url(f"{hostile}/dupids", admin_key=None, window_s=0.2, scrapes=2)
    assert [w.replica_id for w in windows] == ["x", "x#1"]
    assert [f.state for f in d.replicas] == [State.OK, State.DOWN]
    assert d.fleet.state is State.OK


async def test_replicas_past_the_cap_are_left_out_and_said(hostile: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "MAX_WORKERS", 3)
    d, windows = await diagnose_url(f"{hostile}/many", admin_key=None, window_s=0.2, scrapes=2)
    assert len(windows) == 3 and d.fleet.evidence["replicas_not_watched"] == 2.0
    assert d.fleet.message.endswith("; 2 more replicas listed by /workers were not watched: at most 3 are")


async def test_a_replica_whose_metrics_time_out_is_no_metrics_not_down(
        hostile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "REQUEST_TIMEOUT_S", SHORT_TIMEOUT_S)
    start = time.monotonic()
    d, _ = await diagnose_url(f"{hostile}/slowmetrics", admin_key=None, window_s=0.2, scrapes=5)
    took = time.monotonic() - start
    assert [f.state for f in d.replicas] == [State.OK, State.NO_METRICS]
    assert d.replicas[1].message == ("r1 answers its health checks but its /metrics could not be read "
                                     f"(timed out after {SHORT_TIMEOUT_S:g} s)")
    assert d.fleet.message.endswith("(1 of 2 replicas without metrics)")
    assert took < 0.2 + 3 * SHORT_TIMEOUT_S + 1.0  # the window, one scrape timeout and slack


async def test_a_slow_gateway_says_it_timed_out(hostile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "REQUEST_TIMEOUT_S", SHORT_TIMEOUT_S)
    with pytest.raises(FleetUnreachable, match=rf"/slow/workers: timed out after {SHORT_TIMEOUT_S:g} s$"):
        await diagnose_url(f"{hostile}/slow", admin_key=None, window_s=0.2, scrapes=2)


@pytest.mark.parametrize("args", [
    ["--diagnose", "http://"], ["--diagnose", "http://[::1"], ["--diagnose", "http://127.0.0.1:99999"],
    ["--diagnose", "http://127.0.0.1:abc"],
    ["--diagnose", "http://127.0.0.1:9", "--admin-key", "a\r\nX-Evil: 1"],
])
def test_bad_input_exits_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *args, "--window-s", "0.1", "--scrapes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dpserve plan: error: ") and "Traceback" not in err


async def test_an_admin_key_with_a_trailing_newline_is_sent_stripped(hostile: str) -> None:
    """As a key file read into $DPSERVE_ADMIN_KEY leaves it (a newline cannot go in a header)."""
    d, _ = await diagnose_url(f"{hostile}/keyed", admin_key="k\n", window_s=0.2, scrapes=2)
    assert d.fleet.state is State.OK
