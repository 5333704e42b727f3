"""`dpserve bench` against real `dpserve sim` replicas: directly, and through the gateway when it
is built (per-replica share from x-dpserve-worker)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.support import dpserve_process

SIM_ARGS = ("--time-scale", "20", "--kv-cache-tokens", "20000", "--max-model-len", "4096")


@pytest.fixture(scope="module")
def two_sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    logs = tmp_path_factory.mktemp("sims")
    with ExitStack() as stack:
        urls = []
        for i in range(2):
            port = free_port()
            stack.enter_context(dpserve_process(["sim", "--port", str(port), *SIM_ARGS], port,
                                                log_path=logs / f"sim{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls


def _bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "dpserve", "bench", *args, "--output-json", str(out)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_shared_prefix_direct_hits_the_replica_cache(two_sims: list[str], tmp_path: Path) -> None:
    a, b = two_sims
    report = _bench(tmp_path, "--url", a, "--workload", "shared-prefix", "--num-groups", "2",
                    "--prompts-per-group", "6", "--system-prompt-len", "512", "--question-len", "16",
                    "--output-len", "8", "--ignore-eos", "--concurrency", "1", "--metrics-urls", a, b)
    assert report["completed"] == 12 and report["failed"] == 0
    assert report["total_output_tokens"] == 12 * 8  # exact usage from the sim, ignore_eos honoured
    # 10 of 12 requests reuse ~512 of ~545 prompt tokens: hit rate well above a half
    assert 0.6 < report["prefix_cache_hit_rate"] < 0.95
    per_url = report["replicas"]
    assert per_url[b]["queries"] == 0


def test_multi_turn_direct_reuses_history(two_sims: list[str], tmp_path: Path) -> None:
    b = two_sims[1]
    report = _bench(tmp_path, "--url", b, "--workload", "multi-turn", "--num-sessions", "3", "--turns", "4",
                    "--input-len", "64", "--output-len", "16", "--endpoint", "completions",
                    "--concurrency", "3", "--metrics-urls", b)
    assert report["completed"] == 12
    assert report["prefix_cache_hit_rate"] > 0.4
    assert report["itl_ms"]["p50"] is not None


@pytest.mark.skipif(importlib.util.find_spec("dpserve.gateway.command") is None,
                    reason="the gateway (dpserve router) is not built yet")
def test_share_per_replica_through_the_gateway(two_sims: list[str], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with dpserve_process(["router", "--port", str(port), "--policy", "round_robin",
                          "--worker-urls", *two_sims], port, ready_path="/readiness",
                         log_path=tmp_path / "router.log"):
        report = _bench(tmp_path, "--url", url, "--num-prompts", "20", "--input-len", "32",
                        "--output-len", "4", "--concurrency", "4")
    assert report["completed"] == 20
    share = report["worker_share"]
    assert len(share) == 2 and "(no header)" not in share
    assert all(abs(s - 0.5) <= 0.1 for s in share.values())
