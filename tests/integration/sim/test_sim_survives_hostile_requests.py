"""`dpserve sim` under hostile requests (issue 13): each class that once took a replica down is
answered cleanly, /health answers within the gateway's timeout throughout, the next ordinary
request is served; and a fuzzer over the whole request schema never gets a 5xx or a non-JSON error."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import free_port
from tests.integration import hostile
from tests.integration.sim.conftest import TEST_TIME_SCALE
from tests.support import dpserve_process


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    args = ["sim", "--port", str(port), "--time-scale", TEST_TIME_SCALE, "--max-model-len", "4096"]
    with dpserve_process(args, port, log_path=log, timeout_s=60) as proc:
        yield f"http://127.0.0.1:{port}", proc


@pytest.mark.parametrize("hostile_class", [
    hostile.tiny_temperature_beside_a_normal_request,
    hostile.stop_lists_beyond_the_limits,
    hostile.oversized_bodies,
    hostile.huge_prompts_within_the_body_limit,
])
def test_hostile_class_leaves_the_sim_serving(sim: tuple[str, subprocess.Popen[bytes]],
                                              hostile_class: Any) -> None:
    url, proc = sim
    with hostile.health_watched(url):
        hostile_class(url)
        hostile.assert_serves_normally(url, proc)


def test_longest_allowed_stops_over_a_long_output(sim: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = sim
    with hostile.health_watched(url):
        hostile.longest_allowed_stops_over_a_long_output(url, max_tokens=1000)
        hostile.assert_serves_normally(url, proc)


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=hostile.request_bodies(max_new_tokens=16))
def test_fuzzed_requests_never_get_a_5xx(sim: tuple[str, subprocess.Popen[bytes]], request: Any) -> None:
    url, proc = sim
    path, body = request
    hostile.check_fuzzed_reply(path, body, hostile.post(url, path, body, timeout_s=30))
    assert proc.poll() is None, f"the sim exited after {body!r}"
