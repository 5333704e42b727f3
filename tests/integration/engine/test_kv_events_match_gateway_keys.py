"""The gateway's block keys for a request equal the built-in engine's block hashes (bundled model,
chat and completions): the engine's published BlockStored events, read back from its replay socket,
hold exactly the keys precise_prefix computes for the same body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from dpserve.gateway.kv_events.index import KvBlockIndex
from dpserve.gateway.kv_events.prompt_keys import block_keys_for, load_tokenizer
from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.wire import BlockStored, decode_batch
from dpserve.protocol import parse_chat_request, parse_completion_request
from dpserve.serving.engine_client import SamplingParams
from dpserve.serving.prepare import prompt_token_ids
from tests.conftest import free_port

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

CHAT = "/v1/chat/completions"
BODIES: list[tuple[str, dict[str, Any]]] = [
    (CHAT, {"messages": [{"role": "system", "content": "You are terse. " * 8},
                         {"role": "user", "content": "Name the planets of the solar system, in order."}]}),
    ("/v1/completions", {"prompt": "The quick brown fox jumps over the lazy dog. " * 6}),
]


def replayed(replay_endpoint: str) -> list[bytes]:
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer.connect(replay_endpoint)
    dealer.send_multipart((b"", (0).to_bytes(8, "big")))
    payloads = []
    while True:
        frames = dealer.recv_multipart()
        if int.from_bytes(frames[-2], "big", signed=True) < 0:
            break
        payloads.append(frames[-1])
    dealer.close(0)
    ctx.term()
    return payloads


def stored_events(replay_endpoint: str, want: set[int], timeout_s: float = 10.0) -> list[BlockStored]:
    """Every BlockStored the engine published, once the publisher thread has sent `want`."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [e for p in replayed(replay_endpoint) for e in decode_batch(p).events
                  if isinstance(e, BlockStored)]
        if want <= {h for e in events for h in e.block_hashes} or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_gateway_keys_are_the_engines_block_hashes(make_engine: Callable[..., Any], tokenizer: Any,
                                                   tmp_path: Path) -> None:
    replay = f"tcp://127.0.0.1:{free_port()}"
    config = {"enable_kv_cache_events": True, "endpoint": f"ipc://{tmp_path}/e.pub",
              "replay_endpoint": replay}
    engine = make_engine(kv_events_config=json.dumps(config), kv_cache_tokens=4096, block_size=16)
    gateway_tokenizer = load_tokenizer("smollm2-135m")  # built as precise_prefix's worker builds it
    try:
        engine_hashes: list[list[int]] = []
        for endpoint, body in BODIES:  # the replica's server: parse, template, tokenise, run
            parsed = parse_chat_request(body) if endpoint == CHAT else parse_completion_request(body)
            ids = prompt_token_ids(parsed, tokenizer)  # `dpserve engine`'s tokenizer
            seq = engine.add_request(f"r{len(engine_hashes)}", ids, SamplingParams(max_tokens=1))
            while not seq.is_finished:
                engine.step()
            engine_hashes.append(chain_keys(ids, 16))
        events = stored_events(replay, {h for hs in engine_hashes for h in hs})
        index = KvBlockIndex(10_000, 0.0)
        index.apply("engine", events)
        published = {h for e in events for h in e.block_hashes}
        for (endpoint, body), hashes in zip(BODIES, engine_hashes, strict=True):
            result = block_keys_for(gateway_tokenizer, endpoint, body, index.block_size or 0)
            assert result is not None
            keys, num_tokens = result
            assert len(keys) == num_tokens // 16 >= 3
            assert list(keys) == hashes  # the engine's own chained block hashes
            assert set(keys) <= published
            assert index.match(keys, ["engine"], now=0.0) == {"engine": len(keys)}
    finally:
        engine.kv_events.close()
