"""`dpserve sim` and `dpserve engine` (the bundled model) under hostile requests (issue 13):
temperature 1e-40 once killed the engine core, long stop lists and 10 MB prompts stalled /health.
Each class is answered cleanly while /health answers within the gateway's timeout, the next
ordinary request is served, and a fuzzer over the whole request schema never gets a 5xx, a
non-JSON error or a hang, and leaves the process alive."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import free_port
from tests.integration import hostile
from tests.integration.sim.conftest import TEST_TIME_SCALE
from tests.support import dpserve_process


@dataclass(frozen=True)
class Replica:
    url: str
    proc: subprocess.Popen[bytes]
    fuzz_examples: int  # bounded for CI: the engine's examples cost a model step each
    max_new_tokens: int  # what a valid fuzzed request may generate
    long_output_tokens: int


# kind → (extra args, startup timeout, fuzz examples, fuzzed max_tokens, long output)
KINDS: dict[str, tuple[list[str], float, int, int, int]] = {
    "sim": (["--time-scale", TEST_TIME_SCALE, "--max-model-len", "4096"], 60, 150, 16, 1000),
    "engine": (["--kv-cache-tokens", "8192", "--max-num-batched-tokens", "512"], 180, 40, 2, 16),
}


ENGINE = pytest.param("engine", marks=[pytest.mark.model, pytest.mark.slow])


@pytest.fixture(scope="module", params=["sim", ENGINE])
def replica(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    kind = request.param
    if kind == "engine":
        request.getfixturevalue("bundled_model_dir")  # converted before the server starts
    extra, timeout_s, fuzz_examples, max_new_tokens, long_output = KINDS[kind]
    port = free_port()
    log = tmp_path_factory.mktemp(kind) / f"{kind}.log"
    args = [kind, "--port", str(port), *extra]
    with dpserve_process(args, port, log_path=log, timeout_s=timeout_s) as proc:
        yield Replica(f"http://127.0.0.1:{port}", proc, fuzz_examples, max_new_tokens, long_output)


@pytest.mark.parametrize("hostile_class", [
    hostile.tiny_temperature_beside_a_normal_request,
    hostile.stop_lists_beyond_the_limits,
    hostile.oversized_bodies,
    hostile.huge_prompts_within_the_body_limit,
    hostile.json_bombs_under_the_body_limit,
])
def test_hostile_class_leaves_the_replica_serving(replica: Replica,
                                                  hostile_class: Callable[[str], None]) -> None:
    with hostile.health_watched(replica.url):
        hostile_class(replica.url)
        hostile.assert_serves_normally(replica.url, replica.proc)


def test_longest_allowed_stops_over_a_long_output(replica: Replica) -> None:
    with hostile.health_watched(replica.url):
        hostile.longest_allowed_stops_over_a_long_output(replica.url, replica.long_output_tokens)
        hostile.assert_serves_normally(replica.url, replica.proc)


def test_fuzzed_requests_never_get_a_5xx(replica: Replica) -> None:
    @settings(max_examples=replica.fuzz_examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(request=hostile.request_bodies(replica.max_new_tokens))
    def one_request(request: tuple[str, Any]) -> None:
        path, body = request
        hostile.check_fuzzed_reply(path, body, hostile.post(replica.url, path, body, timeout_s=60))
        assert replica.proc.poll() is None, f"the replica exited after {body!r}"

    with hostile.health_watched(replica.url):
        one_request()
