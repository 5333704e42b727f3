"""Closing the built-in engine (what its core process does when it stops) sends the KV events its
publisher still had queued: they reach a subscriber, the blocks of the last request included."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.wire import BlockStored, decode_batch
from dpserve.serving.engine_client import SamplingParams

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]


def test_close_sends_the_events_still_queued(make_engine: Callable[..., Any], tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/e.pub"
    engine = make_engine(kv_events_config=json.dumps({"enable_kv_cache_events": True, "endpoint": endpoint}),
                         kv_cache_tokens=4096, block_size=16)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 100)
    sub.connect(endpoint)
    try:
        while True:  # until the subscription is live (a SUB misses what precedes it)
            engine.kv_events.publish([])
            try:
                sub.recv_multipart()
                break
            except zmq.Again:
                pass
        prompt = list(range(1, 65))  # 4 full blocks
        seq = engine.add_request("r", prompt, SamplingParams(max_tokens=1))
        while not seq.is_finished:
            engine.step()
        engine.close()  # at once: the step's events may still be queued
        assert engine.kv_events is None
        stored: set[object] = set()
        sub.setsockopt(zmq.RCVTIMEO, 1000)
        with pytest.raises(zmq.Again):
            while True:
                events = decode_batch(sub.recv_multipart()[2]).events
                stored.update(h for e in events if isinstance(e, BlockStored) for h in e.block_hashes)
        assert set(chain_keys(prompt, 16)) <= stored
    finally:
        engine.close()  # a second close does nothing
        sub.close(0)
        ctx.term()
