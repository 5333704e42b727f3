"""precise_prefix's tokenizer process: its keys equal the in-process computation (chat and completions),
no request waits for the process to start (it is routed without keys meanwhile), and a tokenizer
that cannot load leaves routing on the approximate tree with a warning."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing.context
import os
import random
import signal
import time

import pytest

from dpserve.gateway.kv_events.prompt_keys import (
    MAX_KEYED_PROMPT_CHARS,
    PromptKeyer,
    block_keys_for,
    load_tokenizer,
)
from dpserve.gateway.policies.base import RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.policies.precise_prefix import PrecisePrefixPolicy
from dpserve.kv_events.wire import BlockStored

pytestmark = pytest.mark.timeout(120)
BS = 16
START_TIMEOUT_S = 90.0  # spawning Python and importing dpserve on a loaded 2-core machine
PATIENT_S = 60.0  # a wait budget for tests that compare keys: a loaded machine is not the subject
CHAT = ("/v1/chat/completions", {"messages": [{"role": "system", "content": "You are terse. " * 20},
                                              {"role": "user", "content": "Hello there"}]})
COMPLETION = ("/v1/completions", {"prompt": "The quick brown fox jumps over the lazy dog. " * 10})


async def until_ready(keyer: PromptKeyer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not keyer.is_ready:
        assert time.monotonic() < deadline, "tokenizer process not ready"
        await asyncio.sleep(0.05)


async def test_keys_from_the_process_are_the_in_process_keys() -> None:
    keyer = PromptKeyer("sim", PATIENT_S)
    tokenizer = load_tokenizer("sim")
    try:
        for endpoint, body in (CHAT, COMPLETION):
            expected = block_keys_for(tokenizer, endpoint, body, BS)
            assert expected is not None and len(expected[0]) >= 3
            assert await keyer.keys(endpoint, body, BS) == expected
        assert await keyer.keys("/v1/completions", {"prompt": 5}, BS) is None  # the replica's 400
    finally:
        keyer.close()


@pytest.mark.model
@pytest.mark.parametrize(("spec", "note"), [("sim", "(chat history remembered)"),
                                            ("smollm2-135m", "(chat history remembered)")])
async def test_the_gateway_log_says_whether_chat_history_is_remembered(
        spec: str, note: str, caplog: pytest.LogCaptureFixture) -> None:
    keyer = PromptKeyer(spec, PATIENT_S)
    try:
        with caplog.at_level(logging.INFO, logger="dpserve.gateway.kv_events.prompt_keys"):
            keyer.start()
            await until_ready(keyer)
        assert f"has loaded {spec!r} {note}" in caplog.text
    finally:
        keyer.close()


async def test_no_request_waits_for_the_process_to_start() -> None:
    config = PolicyConfig(policy="precise_prefix", kv_events_tokenizer="sim")
    policy = PrecisePrefixPolicy(config, random.Random(0), time.monotonic)
    endpoint, body = COMPLETION
    request = RouteRequest("t", None, endpoint, body)
    try:
        policy.on_kv_events("a", [BlockStored([1], None, list(range(BS)), BS)])  # block size known
        assert policy.keyer is not None
        policy.keyer.wait_budget_s = PATIENT_S
        assert not policy.keyer.is_ready  # just spawned
        assert policy.gauges()["dpserve_kv_keyer_ready"] == 0
        assert (await policy.prepare(request)).block_keys is None  # routed by the tree, at once
        await until_ready(policy.keyer)
        assert policy.gauges()["dpserve_kv_keyer_ready"] == 1
        keyed = await policy.prepare(request)
        expected = block_keys_for(load_tokenizer("sim"), endpoint, body, BS)
        assert expected is not None and keyed.block_keys == expected[0]
    finally:
        await policy.close()


async def test_a_tokenizer_that_cannot_load_leaves_routing_on_the_tree(
        caplog: pytest.LogCaptureFixture) -> None:
    keyer = PromptKeyer("/nonexistent/model-dir")
    try:
        with caplog.at_level(logging.WARNING):
            keyer.start()
            deadline = time.monotonic() + START_TIMEOUT_S
            while "could not load tokenizer" not in caplog.text:
                assert time.monotonic() < deadline, "no warning about the tokenizer"
                await asyncio.sleep(0.05)
        assert not keyer.is_ready
    finally:
        keyer.close()


def _completion(i: int, size: int = 400) -> dict[str, str]:
    return {"prompt": f"request {i}: " + "lorem ipsum dolor sit amet " * (size // 27)}


async def test_concurrent_requests_each_get_their_own_keys_in_order() -> None:
    """Replies resolve the oldest waiting request: 64 at once, different sizes, each gets its own."""
    keyer, tokenizer = PromptKeyer("sim", PATIENT_S), load_tokenizer("sim")
    try:
        await until_ready_after_start(keyer)
        bodies = [_completion(i, 100 + 97 * i) for i in range(64)]
        got = await asyncio.gather(*(keyer.keys("/v1/completions", b, BS) for b in bodies))
        assert list(got) == [block_keys_for(tokenizer, "/v1/completions", b, BS) for b in bodies]
    finally:
        keyer.close()


async def test_a_body_larger_than_the_pipe_buffer_goes_through_whole() -> None:
    """A 2 MB prompt does not fit a pipe's 64 KB buffer: the rest is written as the process reads,
    and a small request sent meanwhile waits its turn behind it."""
    keyer, tokenizer = PromptKeyer("sim", PATIENT_S), load_tokenizer("sim")
    try:
        await until_ready_after_start(keyer)
        big, small = _completion(0, 2_000_000), _completion(1)
        got = await asyncio.gather(keyer.keys("/v1/completions", big, BS),
                                   keyer.keys("/v1/completions", small, BS))
        assert got[0] == block_keys_for(tokenizer, "/v1/completions", big, BS)
        assert got[1] == block_keys_for(tokenizer, "/v1/completions", small, BS)
    finally:
        keyer.close()


async def test_a_cancelled_caller_does_not_shift_the_replies() -> None:
    keyer, tokenizer = PromptKeyer("sim", PATIENT_S), load_tokenizer("sim")
    try:
        await until_ready_after_start(keyer)
        first = asyncio.create_task(keyer.keys("/v1/completions", _completion(0, 200_000), BS))
        second = asyncio.create_task(keyer.keys("/v1/completions", _completion(1), BS))
        await asyncio.sleep(0)  # both sent
        first.cancel()
        assert await second == block_keys_for(tokenizer, "/v1/completions", _completion(1), BS)
        assert first.cancelled()
    finally:
        keyer.close()


async def test_a_killed_process_answers_its_waiting_callers_none_and_is_restarted(
        caplog: pytest.LogCaptureFixture) -> None:
    keyer, tokenizer = PromptKeyer("sim", PATIENT_S), load_tokenizer("sim")
    try:
        await until_ready_after_start(keyer)
        process = keyer._process
        assert process is not None
        slow = asyncio.create_task(keyer.keys("/v1/completions", _completion(0, 8_000_000), BS))
        await asyncio.sleep(0.02)  # sent; tokenising 8 MB takes the process about half a second
        with caplog.at_level(logging.WARNING):
            os.kill(process.pid, signal.SIGKILL)
            assert await slow is None
        assert "tokenizer process died" in caplog.text
        assert not keyer.is_ready
        body = _completion(2)
        assert await keyer.keys("/v1/completions", body, BS) == block_keys_for(
            tokenizer, "/v1/completions", body, BS)  # a new process, started by this request
        assert keyer._process is not None and keyer._process.pid != process.pid
    finally:
        keyer.close()


async def until_ready_after_start(keyer: PromptKeyer) -> None:
    keyer.start()
    await until_ready(keyer)


async def test_a_body_that_cannot_be_sent_is_not_keyed_and_shifts_nothing() -> None:
    """1,000 nested lists (valid JSON) exceed pickle's recursion limit: that request gets None, and
    the next one still gets its own keys (a reply was once owed to a request never sent)."""
    keyer, tokenizer = PromptKeyer("sim", PATIENT_S), load_tokenizer("sim")
    nested: list[object] = []
    for _ in range(1_000):
        nested = [nested]
    try:
        await until_ready_after_start(keyer)
        assert await keyer.keys("/v1/completions", {"prompt": "hi", "x": nested}, BS) is None
        body = _completion(1)
        assert await asyncio.wait_for(keyer.keys("/v1/completions", body, BS), 10) == block_keys_for(
            tokenizer, "/v1/completions", body, BS)
    finally:
        keyer.close()


async def test_a_stuck_process_costs_a_request_one_wait_budget_and_the_next_ones_nothing() -> None:
    keyer, tokenizer = PromptKeyer("sim", wait_budget_s=0.2), load_tokenizer("sim")
    try:
        await until_ready_after_start(keyer)
        assert keyer._process is not None and keyer._process.pid is not None
        pid = keyer._process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            assert await keyer.keys("/v1/completions", _completion(0), BS) is None
            waited = time.monotonic() - t0
            assert 0.15 < waited < 5.0
            t0 = time.monotonic()
            assert await keyer.keys("/v1/completions", _completion(1), BS) is None  # behind: not sent
            assert time.monotonic() - t0 < 0.1
            assert keyer.num_late == 2  # what the policy exports as dpserve_kv_keys_late_total
        finally:
            os.kill(pid, signal.SIGCONT)
        body = _completion(2)
        deadline = time.monotonic() + 30
        while (got := await keyer.keys("/v1/completions", body, BS)) is None:  # the backlog drains
            assert time.monotonic() < deadline, "no keys after the process resumed"
            await asyncio.sleep(0.05)
        assert got == block_keys_for(tokenizer, "/v1/completions", body, BS)
    finally:
        keyer.close()


async def test_a_process_that_cannot_be_spawned_leaves_routing_on_the_tree(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_more_processes(self: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", no_more_processes)
    keyer = PromptKeyer("sim")
    with caplog.at_level(logging.WARNING):
        assert await keyer.keys("/v1/completions", _completion(0), BS) is None  # no exception
        assert await keyer.keys("/v1/completions", _completion(1), BS) is None
    assert caplog.text.count("could not start it") == 1  # not retried per request
    assert not keyer.is_ready
    keyer.close()


async def test_after_close_no_process_is_started_again() -> None:
    keyer = PromptKeyer("sim", PATIENT_S)
    await until_ready_after_start(keyer)
    keyer.close()
    assert await keyer.keys("/v1/completions", _completion(0), BS) is None
    keyer.start()
    assert keyer._process is None and not keyer.is_ready


async def test_a_prompt_too_long_to_key_is_routed_by_the_tree_at_once() -> None:
    config = PolicyConfig(policy="precise_prefix", kv_events_tokenizer="sim")
    policy = PrecisePrefixPolicy(config, random.Random(0), time.monotonic)
    try:
        policy.on_kv_events("a", [BlockStored([1], None, list(range(BS)), BS)])
        assert policy.keyer is not None
        await until_ready(policy.keyer)
        text = "x " * (MAX_KEYED_PROMPT_CHARS // 2 + 1)
        request = RouteRequest(text, None, "/v1/completions", {"prompt": text})
        assert (await policy.prepare(request)).block_keys is None
    finally:
        await policy.close()
