"""`dpserve serve` flags: defaults match the contract, bad values are clear errors."""

from __future__ import annotations

import pytest

from dpserve.config import DEFAULT_GATEWAY_PORT, DEFAULT_HOST, DEFAULT_MODEL, ConfigError, parse_config
from dpserve.launcher.config import LaunchConfig, ServeConfig


def _parse(*argv: str) -> ServeConfig:
    return parse_config(ServeConfig, argv, "dpserve serve")[0]


def test_defaults_are_two_builtin_replicas_of_the_bundled_model_on_the_default_address() -> None:
    config = _parse()
    launch = config.launch
    assert (launch.model, launch.backend, launch.dp_size) == (DEFAULT_MODEL, "builtin", 2)
    assert (config.gateway.host, config.gateway.port) == (DEFAULT_HOST, DEFAULT_GATEWAY_PORT)


def test_gateway_flags_are_serve_flags_but_worker_urls_are_not() -> None:
    config = _parse("--policy", "round_robin", "--port", "0", "--max-retries", "5")
    assert (config.gateway.port, config.gateway.retry.max_retries) == (0, 5)
    with pytest.raises(ConfigError, match="unknown flag --worker-urls"):
        _parse("--worker-urls", "http://127.0.0.1:1")


def test_engine_args_are_shell_split() -> None:
    config = _parse("--engine-args", "--max-num-seqs 8 --name 'a b'")
    assert config.launch.engine_argv == ("--max-num-seqs", "8", "--name", "a b")


@pytest.mark.parametrize(("argv", "message"), [
    (["--dp-size", "0"], "--dp-size must be >= 1"),
    (["--tp-size", "0"], "--tp-size must be >= 1"),
    (["--engine-args", "--x 'unclosed"], "--engine-args is not valid shell quoting"),
    (["--device", "cpu", "--gpu-ids", "0"], "--gpu-ids cannot be combined with --device cpu"),
    (["--restart-backoff-s", "5", "--restart-backoff-max-s", "1"], "--restart-backoff-s"),
])
def test_invalid_values_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(*argv)


def test_unknown_backend_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--backend", "tgi")
    assert "builtin" in capsys.readouterr().err


def test_launch_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        LaunchConfig().dp_size = 3  # type: ignore[misc]

