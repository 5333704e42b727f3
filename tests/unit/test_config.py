"""Config machinery: flags from dataclasses, YAML merge under the CLI, unknown keys listed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from dpserve.config import ConfigError, nested, option, parse_config, require


@dataclass(frozen=True)
class Inner:
    block_size: int = option(16, "tokens per block")
    host: str = option("127.0.0.1", "bind")


@dataclass(frozen=True)
class Outer:
    port: int = option(8000, "port")
    policy: Literal["a", "b"] = option("a", "policy")
    worker_urls: tuple[str, ...] = option((), "urls")
    prefix_caching: bool = option(True, "on/off")
    timeout_s: float | None = option(None, "timeout")
    inner: Inner = nested(Inner, exclude=("host",))

    def __post_init__(self) -> None:
        require(self.port > 0, f"--port must be > 0, got {self.port}")


def test_defaults() -> None:
    cfg, common = parse_config(Outer, [], "t")
    assert cfg == Outer()
    assert common.log_level == "info"


def test_cli_flags_all_kinds() -> None:
    cfg, _ = parse_config(Outer, ["--port", "9", "--policy", "b", "--worker-urls", "u1", "u2",
                                  "--no-prefix-caching", "--timeout-s", "1.5",
                                  "--block-size", "32"], "t")
    assert cfg == Outer(port=9, policy="b", worker_urls=("u1", "u2"), prefix_caching=False,
                        timeout_s=1.5, inner=Inner(block_size=32))


def test_yaml_then_cli_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 7\nblock-size: 64\nworker_urls: [x]\nprefix_caching: false\n")
    cfg, common = parse_config(Outer, ["--config", str(path), "--port", "8"], "t")
    assert cfg.port == 8 and cfg.inner.block_size == 64
    assert cfg.worker_urls == ("x",) and cfg.prefix_caching is False
    assert common.config_path == path


def test_unknown_flag_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(Outer, ["--prot", "1"], "t")
    msg = str(err.value)
    assert "--prot" in msg and "did you mean --port" in msg and "--block-size" in msg


def test_unknown_yaml_key_lists_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("colour: red\n")
    with pytest.raises(ConfigError) as err:
        parse_config(Outer, ["--config", str(path)], "t")
    assert "colour" in str(err.value) and "worker_urls" in str(err.value)


def test_excluded_nested_field_is_not_a_flag() -> None:
    with pytest.raises(ConfigError):
        parse_config(Outer, ["--host", "0.0.0.0"], "t")


@pytest.mark.parametrize("text", ["port: abc\n", "prefix_caching: 3\n", "policy: c\n",
                                  "port: [1]\n", "- a\n", "port: {\n"])
def test_bad_yaml_values(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        parse_config(Outer, ["--config", str(path)], "t")


def test_validation_message() -> None:
    with pytest.raises(ConfigError, match="--port must be > 0"):
        parse_config(Outer, ["--port", "0"], "t")


def test_config_is_frozen() -> None:
    cfg, _ = parse_config(Outer, [], "t")
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


def test_log_level_from_yaml_and_cli_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("log-level: warning\n")
    _, common = parse_config(Outer, ["--config", str(path)], "t")
    assert common.log_level == "warning"
    _, common = parse_config(Outer, ["--config", str(path), "--log-level", "debug"], "t")
    assert common.log_level == "debug"


def test_bad_log_level_in_yaml_names_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("log-level: loud\n")
    with pytest.raises(ConfigError, match="'loud' is not one of"):
        parse_config(Outer, ["--config", str(path)], "t")
