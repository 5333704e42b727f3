"""`dpserve engine` (the bundled model) under hostile requests (issue 13): temperature 1e-40 once
killed the engine core, long stop lists and 10 MB prompts stalled /health. Each class is answered
cleanly while /health answers within the gateway's timeout, the next ordinary request is served, and
a fuzzer over the whole request schema never gets a 5xx, a non-JSON error or a hang."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import free_port
from tests.integration import hostile
from tests.support import dpserve_process

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    args = ["engine", "--port", str(port), "--kv-cache-tokens", "8192", "--max-num-batched-tokens", "512"]
    with dpserve_process(args, port, log_path=log, timeout_s=180) as proc:
        yield f"http://127.0.0.1:{port}", proc


@pytest.mark.parametrize("hostile_class", [
    hostile.tiny_temperature_beside_a_normal_request,
    hostile.stop_lists_beyond_the_limits,
    hostile.oversized_bodies,
    hostile.huge_prompts_within_the_body_limit,
])
def test_hostile_class_leaves_the_engine_serving(engine: tuple[str, subprocess.Popen[bytes]],
                                                 hostile_class: Any) -> None:
    url, proc = engine
    with hostile.health_watched(url):
        hostile_class(url)
        hostile.assert_serves_normally(url, proc)


def test_longest_allowed_stops_over_a_long_output(engine: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = engine
    with hostile.health_watched(url):
        hostile.longest_allowed_stops_over_a_long_output(url, max_tokens=16)
        hostile.assert_serves_normally(url, proc)


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=hostile.request_bodies(max_new_tokens=2))
def test_fuzzed_requests_never_get_a_5xx(engine: tuple[str, subprocess.Popen[bytes]], request: Any) -> None:
    url, proc = engine
    path, body = request
    hostile.check_fuzzed_reply(path, body, hostile.post(url, path, body, timeout_s=60))
    assert proc.poll() is None, f"the engine exited after {body!r}"
