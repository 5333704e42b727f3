"""`dpserve serve --backend vllm` for real, where vLLM (e.g. its CPU build) is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.serve_process import chat, serve_process

pytestmark = [
    pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(600),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed in this environment; install vLLM (its CPU build "
                              "works) to run the --backend vllm end-to-end test"),
]


def test_one_vllm_replica_behind_the_gateway_answers(tmp_path: Path, bundled_model_dir: Path) -> None:
    port = free_port()
    args = ["--backend", "vllm", "--dp-size", "1", "--no-echo-replica-logs",
            "--engine-args", "--max-model-len 2048 --dtype float32"]
    with serve_process(args, port, tmp_path, timeout_s=540):
        status, worker = chat(port, "Hello!")
    assert status == 200 and worker
