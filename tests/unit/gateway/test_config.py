"""GatewayConfig: flags from the CLI, nested policy/health/admission configs, validation messages."""

from __future__ import annotations

import pytest

from dpserve.config import ConfigError, parse_config
from dpserve.errors import HTTPError
from dpserve.gateway.config import GatewayConfig
from dpserve.gateway.routing_text import parse_request
from dpserve.http_names import CHAT_PATH, COMPLETIONS_PATH, SESSION_HEADER


def test_flags_reach_nested_configs() -> None:
    cfg, _ = parse_config(GatewayConfig, ["--worker-urls", "http://a:1", "http://b:2", "--worker-weights",
                                          "1", "2", "--policy", "consistent_hash", "--max-retries", "0",
                                          "--health-failure-threshold", "4", "--max-inflight-per-worker",
                                          "8"], "dpserve router")
    assert cfg.worker_urls == ("http://a:1", "http://b:2") and cfg.weight_of(1) == 2.0
    assert cfg.routing.policy == "consistent_hash" and cfg.retry.max_retries == 0
    assert cfg.health.health_failure_threshold == 4 and cfg.admission.max_inflight_per_worker == 8
    assert cfg.routing.policy == "consistent_hash"
    default, _ = parse_config(GatewayConfig, [], "dpserve router")
    assert default.routing.policy == "cache_aware" and default.port == 8000


@pytest.mark.parametrize("argv, message", [
    (["--worker-urls", "a:1"], "not an http"),
    (["--worker-urls", "http://a", "--worker-weights", "1", "2"], "one weight per"),
    (["--cache-threshold", "2"], "--cache-threshold"),
    (["--worker-urls", "http://a", "--worker-weights", "1000"], "<= 100"),
    (["--worker-urls", "http://a", "--worker-weights", "0"], "--worker-weights"),
    (["--worker-urls", "http://a:1", "http://a:1/"], "twice"),
    (["--worker-urls", "https://a:1"], "not an http://"),
    (["--retry-backoff-base-s", "2", "--retry-backoff-max-s", "1"], "backoff"),
    (["--health-success-threshold", "0"], "--health-success-threshold"),
])
def test_invalid_values_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(GatewayConfig, argv, "dpserve router")


def test_chat_routing_text_is_the_whole_conversation_with_roles() -> None:
    raw = (b'{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": '
           b'[{"type": "text", "text": "U1"}]}, {"role": "assistant", "content": "A"}], "user": "bob",'
           b'"stream": true, "max_tokens": 9}')
    parsed = parse_request(CHAT_PATH, raw, {})
    assert parsed.route.text == "<|system|>S<|user|>U1<|assistant|>A"
    assert parsed.route.session_key == "bob" and parsed.stream and parsed.max_tokens == 9
    assert parse_request(CHAT_PATH, raw, {SESSION_HEADER: "s1"}).route.session_key == "s1"


def test_completions_prompt_forms() -> None:
    assert parse_request(COMPLETIONS_PATH, b'{"prompt": "abc"}', {}).route.text == "abc"
    assert parse_request(COMPLETIONS_PATH, b'{"prompt": ["a", "b"]}', {}).route.text == "ab"
    assert parse_request(COMPLETIONS_PATH, b'{"prompt": [1, 2]}', {}).route.text == "1 2"
    with pytest.raises(HTTPError) as err:
        parse_request(COMPLETIONS_PATH, b'{"prompt": 5}', {})
    assert err.value.status == 400 and err.value.param == "prompt"
