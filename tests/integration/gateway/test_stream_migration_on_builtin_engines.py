"""Issue 14 on the built-in engine and the bundled model: a greedy 96-token stream whose replica
is SIGKILLed after 20 tokens arrives whole, [DONE]-terminated, identical to an uninterrupted
run — token for token — through a raw client and through the official `openai` client."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import openai
import pytest

from dpserve.http_names import CHAT_PATH, METRICS_PATH, WORKER_HEADER
from tests.integration.gateway.replica_fleet import Replica, replica_fleet

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(300)]

MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and a storm."}]
GREEDY_96 = {"model": "smollm2-135m", "messages": MESSAGES, "max_tokens": 96, "temperature": 0,
             "ignore_eos": True}
KILL_AFTER_TOKENS = 20


@pytest.fixture(scope="module")
def engines(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    args = ["--model", str(bundled_model_dir), "--served-model-name", "smollm2-135m", "--num-threads", "1",
            "--kv-cache-tokens", "4096", "--max-num-batched-tokens", "512"]
    with replica_fleet(3, "engine", args, tmp_path_factory.mktemp("engines"), timeout_s=240) as replicas:
        yield replicas


_REFERENCE: dict[str, Any] = {}


async def reference_run(replica: Replica) -> dict[str, Any]:
    """The uninterrupted greedy run, straight from a replica: text and token ids (kept for the
    module's other test)."""
    async with aiohttp.ClientSession() as client, client.post(
            replica.url + CHAT_PATH, json={**GREEDY_96, "return_token_ids": True}) as resp:
        choice = (await resp.json())["choices"][0]
    assert len(choice["token_ids"]) == 96
    _REFERENCE.update(text=choice["message"]["content"], token_ids=choice["token_ids"])
    return _REFERENCE


def _by_worker(gw: Any, engines: list[Replica], worker_id: str) -> Replica:
    url = gw.state.registry.get(worker_id).url
    return next(r for r in engines if r.url == url)


async def test_raw_stream_survives_sigkill_token_for_token(engines, gateway) -> None:
    gw = await gateway([SimpleNamespace(url=r.url) for r in engines[:2]], policy="round_robin")
    uninterrupted = asyncio.create_task(reference_run(engines[2]))  # side by side: 2 cores
    body = {**GREEDY_96, "stream": True, "return_token_ids": True, "stream_options": {"include_usage": True}}
    text, ids, events, done = "", [], [], False
    async with aiohttp.ClientSession() as client, \
            client.post(gw.url + CHAT_PATH, json=body) as resp:
        assert resp.status == 200
        victim = _by_worker(gw, engines, resp.headers[WORKER_HEADER])
        async for line in resp.content:
            if line.strip() == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: "):
                event = json.loads(line[6:])
                events.append(event)
                for choice in event.get("choices", []):
                    text += choice["delta"].get("content") or ""
                    ids += choice.get("token_ids") or []
                if len(ids) >= KILL_AFTER_TOKENS and victim.proc.poll() is None:
                    victim.signal(signal.SIGKILL)
    assert victim.proc.wait(10) == -signal.SIGKILL
    assert done and not any("error" in e for e in events)
    reference = await uninterrupted
    assert ids == reference["token_ids"] and text == reference["text"]
    assert events[-1]["usage"]["completion_tokens"] == 96
    assert len({e["id"] for e in events}) == 1
    async with aiohttp.ClientSession() as client, client.get(gw.url + METRICS_PATH) as resp:
        metrics = await resp.text()
    assert 'dpserve_stream_migrations_total{reason="upstream_error",outcome="migrated"} 1' in metrics


async def test_openai_client_stream_survives_sigkill(engines, gateway) -> None:
    reference = _REFERENCE or await reference_run(engines[2])
    alive = [r for r in engines if r.proc.poll() is None]
    gw = await gateway([SimpleNamespace(url=r.url) for r in alive], policy="round_robin")
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as oai:
        raw = await oai.chat.completions.with_raw_response.create(
            model="smollm2-135m", messages=MESSAGES, max_tokens=96, temperature=0, stream=True,
            extra_body={"ignore_eos": True})
        victim = _by_worker(gw, alive, raw.headers[WORKER_HEADER])
        parts: list[str] = []
        async for chunk in raw.parse():
            parts += [c.delta.content or "" for c in chunk.choices]
            if sum(1 for p in parts if p) >= KILL_AFTER_TOKENS and victim.proc.poll() is None:
                victim.signal(signal.SIGKILL)
    assert victim.proc.wait(10) == -signal.SIGKILL
    assert "".join(parts) == reference["text"]
