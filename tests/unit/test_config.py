"""Config machinery: flags from dataclasses, YAML merge under the CLI, unknown keys listed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from dpserve.config import (
    SHORT_REPR_CHARS,
    ConfigError,
    in_range,
    nested,
    option,
    parse_config,
    require,
    require_range,
    short_repr,
)


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


@dataclass(frozen=True)
class Numbers:
    count: int = option(1, "an int")
    rate: float = option(1.0, "a float")


@pytest.mark.parametrize(("text", "message"), [
    ("count: 8.7\n", "'count': 8.7 is not an integer"),  # was int(8.7) == 8
    ("count: 1e9\n", "'count': '1e9' is not an integer"),  # PyYAML reads 1e9 as a string
    ("rate: " + "1" * 400 + "\n", "'rate': 111111.* is not a number"),  # float() overflows
    ("count: [1, 2]\n", r"'count': \[1, 2\] is not an integer"),
])
def test_yaml_values_of_the_wrong_kind(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_config(Numbers, ["--config", str(path)], "t")


def test_a_whole_float_is_an_int(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("count: 8.0\nrate: 2\n")
    assert parse_config(Numbers, ["--config", str(path)], "t")[0] == Numbers(count=8, rate=2.0)


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe port: 1\n", "is not UTF-8 text: invalid start byte at byte 0"),
    (b"port: " + b"[" * 100_000, "is nested too deeply"),
    (b"port: " + b"1" * 5000, "is not valid YAML: Exceeds the limit"),  # int() of > 4300 digits
    (b"port: [\n", "is not valid YAML: while parsing"),
])
def test_unreadable_yaml_is_a_one_line_config_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        parse_config(Outer, ["--config", str(path)], "t")
    assert "\n" not in str(err.value)


@pytest.mark.timeout(10)  # without short reprs the message expanded 9^9 strings
def test_an_alias_bomb_is_not_expanded_into_the_message(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port:\n  - &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)))
    with pytest.raises(ConfigError, match=r"'port': \[\['x'") as err:
        parse_config(Outer, ["--config", str(path)], "t")
    assert len(str(err.value)) < 200


def test_short_repr_bounds_any_value() -> None:
    assert "..." in short_repr("x" * 10_000) and len(short_repr("x" * 10_000)) <= SHORT_REPR_CHARS
    nested_lists: list[object] = [1] * 9
    for _ in range(9):
        nested_lists = [nested_lists] * 9  # 9^10 leaves
    assert len(short_repr(nested_lists)) == SHORT_REPR_CHARS and short_repr(nested_lists).endswith("...")
    assert short_repr(10**5000) == "<an integer of about 5000 digits>"  # repr() itself raises
    assert short_repr(float("inf")) == "inf" and short_repr([1, 2]) == "[1, 2]"


@pytest.mark.parametrize(("value", "ok"), [
    (1, True), (10, True), (0, False), (11, False), (10**400, False), (5.5, True),
    (float("inf"), False), (float("nan"), False), (True, False), ("5", False), (None, False),
])
def test_in_range(value: object, ok: bool) -> None:
    assert in_range(value, 1, 10) is ok


def test_require_range_messages() -> None:
    require_range("--n", None, 1, 10)  # absent: nothing to check
    with pytest.raises(ConfigError, match=r"^--n must be in 1\.\.10, got 11$"):
        require_range("--n", 11, 1, 10)
    with pytest.raises(ConfigError, match=r"^--r must be a finite number in \(0, 10\], got inf$"):
        require_range("--r", float("inf"), 0.0, 10.0, low_open=True)


def test_argparse_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Outer, ["--port", "1.5"], "t")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == "t: error: argument --port: invalid int value: '1.5' (see t --help)\n"
