"""Opt-in: the gateway consumes a real vLLM replica's KV events, where vLLM is installed.

`dpserve serve --backend vllm --policy precise_prefix` (serve passes vLLM its --kv-events-config
and tells the gateway where it publishes); after one request, the gateway's event index holds
the request's blocks, i.e. vLLM's BlockStored events decoded and keyed as precise_prefix keys them.
"""

from __future__ import annotations

import importlib.util
import json
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


def test_vllm_events_reach_the_precise_index(tmp_path: Path) -> None:
    port = free_port()
    args = ["--backend", "vllm", "--dp-size", "1", "--no-echo-replica-logs", "--policy", "precise_prefix",
            "--engine-args", "--max-model-len 2048 --dtype float32"]
    with serve_process(args, port, tmp_path, timeout_s=540):
        status, _ = chat(port, "Tell me about the solar system. " * 8)
        assert status == 200
        status, _ = chat(port, "Tell me about the solar system. " * 8)
        assert status == 200
        assert gateway_metric(port, "dpserve_kv_events_batches_total") > 0
        assert gateway_metric(port, "dpserve_kv_index_blocks") > 0, \
            json.dumps("no vLLM block reached the index")
