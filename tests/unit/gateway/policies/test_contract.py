"""Contract over every registered policy: picks a candidate, deterministic under a seed, hooks safe."""

from __future__ import annotations

import random

import pytest

from dpserve.gateway.policies import POLICY_NAMES, build_policy, policy_class
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from tests.unit.gateway.fakes import FakeClock, FakeWorker


def _make(name: str, seed: int = 3) -> Policy:
    return build_policy(PolicyConfig(policy=name), rng=random.Random(seed), clock=FakeClock())


def _requests(n: int) -> list[RouteRequest]:
    return [RouteRequest(f"<|user|>question {i % 5} " * (i % 3 + 1), f"s{i % 4}" if i % 2 else None)
            for i in range(n)]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_registered_and_named(name: str) -> None:
    assert policy_class(name).name == name


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_always_picks_one_of_the_candidates_with_a_reason(name: str) -> None:
    fleet = [FakeWorker(f"w{i}", weight=1 + i % 2) for i in range(4)]
    policy = _make(name)
    for w in fleet:
        policy.on_worker_added(w)
    for i, req in enumerate(_requests(60)):
        candidates = fleet[i % 3:] if i % 5 else fleet[:1]
        choice = policy.select(candidates, req)
        assert choice.worker in candidates and isinstance(choice.reason, str) and choice.reason
        choice.worker.in_flight += 1  # type: ignore[attr-defined]
        policy.on_request_finished(choice.worker, req, ok=True)
    policy.on_worker_removed("w1")
    assert policy.select([fleet[0]], RouteRequest("x", "s")).worker is fleet[0]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_deterministic_under_a_seed(name: str) -> None:
    def run() -> list[str]:
        fleet = [FakeWorker(f"w{i}") for i in range(3)]
        policy = _make(name, seed=11)
        for w in fleet:
            policy.on_worker_added(w)
        picks = []
        for req in _requests(40):
            w = policy.select(fleet, req).worker
            picks.append(w.id)
            fleet[int(w.id[1])].in_flight += 1
        return picks
    assert run() == run()


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_policy_that_ignores_kv_events_never_suspends_a_request_in_prepare(name: str) -> None:
    """Only a policy routing on KV events may tokenise in `prepare`; for every other one the proxy's
    `await prepare(...)` returns at once, even with --kv-events-tokenizer set."""
    policy = build_policy(PolicyConfig(policy=name, kv_events_tokenizer="sim"), rng=random.Random(0),
                          clock=FakeClock())
    if policy.wants_kv_events:
        pytest.skip("routes on KV events: may tokenise")
    request = RouteRequest("x", None, "/v1/completions", {"prompt": "x"})
    step = policy.prepare(request)
    with pytest.raises(StopIteration) as done:
        step.send(None)  # runs to the end without yielding to the event loop
    assert done.value.value is request
