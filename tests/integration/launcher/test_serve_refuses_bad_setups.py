"""`dpserve serve` refuses what cannot work with a clear message and leaves nothing running."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.launcher.procs import new_marker, wait_gone

pytestmark = pytest.mark.timeout(60)


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dpserve", "serve", *args], capture_output=True, text=True,
                          timeout=45, env={**os.environ, **(env or {})})


def test_too_few_gpus_exits_2_stating_the_arithmetic() -> None:
    done = _serve("--backend", "vllm", "--model", "org/model", "--device", "cuda", "--gpu-ids", "0", "1",
                  "--dp-size", "3", "--tp-size", "2")
    assert done.returncode == 2
    assert "3 replicas × TP 2 × PP 1 = 6 GPUs needed, but 2 available" in done.stderr
    assert "Traceback" not in done.stderr


def test_gateway_port_in_use_exits_2_and_starts_no_replica(tmp_path: Path) -> None:
    marker = new_marker()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = _serve("--backend", "sim", "--port", str(port), "--log-dir", str(tmp_path), env=marker)
    assert done.returncode == 2
    assert f"the gateway cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr
    assert wait_gone(marker, 10.0) == []
    assert not list(tmp_path.glob("r*.log"))


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang is installed here")
def test_a_backend_whose_package_is_missing_is_refused_before_launching() -> None:
    done = _serve("--backend", "sglang", "--model", "org/model", "--device", "cpu", "--port", "0")
    assert done.returncode == 2
    assert "the sglang backend needs the 'sglang' package" in done.stderr
    assert "Traceback" not in done.stderr
