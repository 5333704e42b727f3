"""Config machinery: frozen dataclasses ↔ CLI flags and YAML keys, plus the project's defaults.

Every component declares one frozen dataclass whose fields are declared with `option(...)`.
`build_parser` turns it into argparse flags; `parse_config` merges `--config FILE.yaml` (keys are
flag names, dashes or underscores) under the CLI (CLI wins) and builds the frozen object once.
Unknown keys and flags are errors that list the valid ones. Addresses and ports live here only.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

# The only place where addresses and ports are literals.
DEFAULT_HOST = "127.0.0.1"
ANY_HOST = "0.0.0.0"  # every IPv4 interface (a bind there reserves a port on all of them)
DEFAULT_GATEWAY_PORT = 8000
DEFAULT_REPLICA_PORT = 8100
DEFAULT_MODEL = "smollm2-135m"
CACHE_DIR_ENV = "DPSERVE_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/dpserve")

C = TypeVar("C")

LOG_LEVELS = ("debug", "info", "warning", "error")

_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A configuration value, key or flag is invalid; the message says what is valid."""


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    choices: Sequence[Any] | None = None,
    positional: bool = False,
    metavar: str | None = None,
    flag: str | None = None,
    aliases: Sequence[str] = (),
) -> Any:
    """Declare a config field that is also a CLI flag (`--field-name`) and a YAML key.

    Tuple-typed fields take several values (`--worker-urls A B`); bool fields get `--x/--no-x`.
    A `positional` field is a positional argument (it may also come from the YAML file).
    `aliases` are extra CLI spellings of the flag (`-o` for `--output`).
    """
    meta = {"help": help, "choices": choices, "positional": positional, "metavar": metavar,
            "flag": flag, "aliases": tuple(aliases)}
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(cls: type, *, exclude: Sequence[str] = ()) -> Any:
    """Embed another component's config; its fields become flags of this one (minus `exclude`,
    which keep their defaults)."""
    return dataclasses.field(
        default_factory=cls, metadata={"nested": True, "exclude": tuple(exclude)}
    )


@dataclasses.dataclass(frozen=True)
class _Flag:
    """One flattened leaf field: where it lives (path through nested configs) and its type."""

    path: tuple[str, ...]
    field: dataclasses.Field[Any]
    type: Any

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def flag(self) -> str:
        return self.field.metadata.get("flag") or "--" + self.name.replace("_", "-")


def _leaf_flags(cls: type, prefix: tuple[str, ...] = (), exclude: Sequence[str] = ()) -> list[_Flag]:
    hints = typing.get_type_hints(cls)
    flags: list[_Flag] = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if f.metadata.get("nested"):
            flags.extend(_leaf_flags(hints[f.name], (*prefix, f.name), f.metadata["exclude"]))
        else:
            flags.append(_Flag((*prefix, f.name), f, hints[f.name]))
    return flags


def config_flags(cls: type) -> list[_Flag]:
    """All leaf fields of `cls`, nested configs flattened; duplicate names are a definition bug."""
    flags = _leaf_flags(cls)
    seen: dict[str, tuple[str, ...]] = {}
    for fl in flags:
        if fl.name in seen:
            raise TypeError(f"{cls.__name__}: flag {fl.flag} defined twice ({seen[fl.name]} and {fl.path})")
        seen[fl.name] = fl.path
    return flags


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _scalar_converter(tp: Any) -> tuple[Any, Sequence[Any] | None]:
    """argparse `type=` callable and implied choices for a scalar annotation."""
    if typing.get_origin(tp) is Literal:
        values = typing.get_args(tp)
        return type(values[0]), values
    if tp in (int, float, str):
        return tp, None
    if tp is Path:
        return Path, None
    raise TypeError(f"unsupported config field type {tp!r}")


def _add_flag(parser: argparse.ArgumentParser, fl: _Flag) -> None:
    tp, _optional = _unwrap_optional(fl.type)
    meta = fl.field.metadata
    help_text = meta.get("help", "")
    default = fl.field.default if fl.field.default is not _MISSING else None
    if default is not None and not isinstance(default, bool):
        help_text += f" (default: {default})"
    kwargs: dict[str, Any] = {"help": help_text, "dest": fl.name, "default": argparse.SUPPRESS}
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        parser.add_argument(fl.flag, *meta.get("aliases", ()), **kwargs)
        return
    if typing.get_origin(tp) is tuple:
        conv, implied = _scalar_converter(typing.get_args(tp)[0])
        kwargs["nargs"] = "*"
    else:
        conv, implied = _scalar_converter(tp)
    kwargs["type"] = conv
    choices = meta.get("choices") or implied
    if choices is not None:
        kwargs["choices"] = list(choices)
    if meta.get("positional"):
        kwargs.pop("dest")
        kwargs["nargs"] = "?"
        parser.add_argument(fl.name, **kwargs)
    else:
        parser.add_argument(fl.flag, *meta.get("aliases", ()), **kwargs)


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (its default prints the whole usage first: 16 lines for
    `dpserve plan`, the error last)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser with one flag per leaf field of `cls` plus the common flags."""
    parser = _OneLineParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.yaml",
                        help="read any of these flags from a YAML file (keys = flag names; CLI wins)")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS,
                        help="log verbosity (default: info)")
    for fl in config_flags(cls):
        _add_flag(parser, fl)
    return parser


def _coerce_yaml_value(fl: _Flag, value: Any) -> Any:
    """Check a YAML value against the field type; YAML already gives ints, bools, lists."""
    tp, optional = _unwrap_optional(fl.type)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {fl.name!r} may not be null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {fl.name!r} must be true or false, got {short_repr(value)}")
        return value
    if typing.get_origin(tp) is tuple:
        items = value if isinstance(value, list) else [value]
        conv, _ = _scalar_converter(typing.get_args(tp)[0])
        return tuple(_convert_scalar(fl, conv, v) for v in items)
    conv, implied = _scalar_converter(tp)
    out = _convert_scalar(fl, conv, value)
    choices = fl.field.metadata.get("choices") or implied
    if choices is not None and out not in choices:
        raise ConfigError(f"config key {fl.name!r}: {short_repr(out)} is not one of {list(choices)}")
    return out


def _type_words(conv: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        conv, f"a {conv.__name__}")


def _convert_scalar(fl: _Flag, conv: Any, value: Any) -> Any:
    # An int field takes no fraction: `num_gpus: 8.7` is a mistake, not 8 GPUs.
    fraction = conv is int and isinstance(value, float) and not value.is_integer()
    if isinstance(value, (dict, list)) or (isinstance(value, bool) and conv is not str) or fraction:
        raise ConfigError(f"config key {fl.name!r}: {short_repr(value)} is not {_type_words(conv)}")
    try:
        return conv(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"config key {fl.name!r}: {short_repr(value)} is not {_type_words(conv)}") from exc


def _unknown_message(kind: str, unknown: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(unknown[:200], valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    shown = unknown if unknown.isprintable() and len(unknown) <= SHORT_REPR_CHARS else short_repr(unknown)
    return f"unknown {kind} {shown}{hint}; valid: {', '.join(sorted(valid))}"


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's content; ConfigError naming `what` and the path when unreadable or invalid."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{what} {path} is nested too deeply to read") from exc
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of more than 4300 digits
        # PyYAML's messages span lines (the offending line, a caret): one line here
        raise ConfigError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from exc


def read_config_file(path: Path, cls: type) -> dict[str, Any]:
    """Read a YAML file of flag values for `cls`; returns {field name: checked value}."""
    raw = read_yaml(path, "config file") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of flag names to values")
    by_name = {fl.name: fl for fl in config_flags(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name == "log_level":  # a common flag, not part of the component config
            if not isinstance(value, str) or value not in LOG_LEVELS:
                raise ConfigError(f"config key {key!r}: {short_repr(value)} is not one of {list(LOG_LEVELS)}")
            values[name] = value
            continue
        if name not in by_name:
            raise ConfigError(_unknown_message("config key", str(key), [*by_name, "log_level"]))
        values[name] = _coerce_yaml_value(by_name[name], value)
    return values


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """Construct `cls` (and its nested configs) from flat {field name: value}; validates once
    through each dataclass's `__post_init__`."""
    return typing.cast(C, _build(cls, values))


def _build(cls: type, values: dict[str, Any], exclude: Sequence[str] = ()) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if f.metadata.get("nested"):
            kwargs[f.name] = _build(hints[f.name], values, f.metadata["exclude"])
        elif f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.default is _MISSING and f.default_factory is _MISSING:
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise ConfigError(f"missing required argument {f.name if f.metadata.get('positional') else flag}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """Flags every subcommand has, outside the component config."""

    log_level: str = "info"
    config_path: Path | None = None


def parse_config(cls: type[C], argv: Sequence[str], prog: str,
                 description: str = "") -> tuple[C, CommonOptions]:
    """argv (+ optional YAML file) → (frozen config, common options). Raises ConfigError."""
    parser = build_parser(cls, prog, description)
    parsed, extra = parser.parse_known_args(list(argv))
    if extra:
        valid = [fl.flag for fl in config_flags(cls)] + ["--config", "--log-level"]
        bad = next((a for a in extra if a.startswith("-")), extra[0])
        raise ConfigError(_unknown_message("flag", bad, valid))
    # An absent `nargs="?"` positional comes back as its SUPPRESS default run through `type`
    # (Python < 3.12), e.g. Path("==SUPPRESS=="); drop it so a YAML value can stand.
    cli_values = {k: v for k, v in vars(parsed).items() if str(v) != argparse.SUPPRESS}
    cli_log_level = cli_values.pop("log_level")
    config_path = cli_values.pop("config")
    values = read_config_file(config_path, cls) if config_path else {}
    file_log_level = values.pop("log_level", None)
    common = CommonOptions(log_level=cli_log_level or file_log_level or "info", config_path=config_path)
    values.update({k: v for k, v in cli_values.items() if v is not None or k not in values})
    for fl in config_flags(cls):  # nargs lists from argparse arrive as lists
        if isinstance(values.get(fl.name), list):
            values[fl.name] = tuple(values[fl.name])
    return build_config(cls, values), common


def require(condition: bool, message: str) -> None:
    """Validation helper for `__post_init__`: raise ConfigError(message) unless condition."""
    if not condition:
        raise ConfigError(message)


def in_range(value: Any, low: float, high: float, *, low_open: bool = False) -> bool:
    """A real number (not a bool), finite, in [low, high] (or (low, high] with `low_open`). An int
    of any size is compared exactly: converting it to float first could overflow."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (value > low if low_open else value >= low) and value <= high


def require_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    """ConfigError naming `name` unless `value` is None or `in_range`: `1..N` for integers, an
    interval for real numbers."""
    if value is None or in_range(value, low, high, low_open=low_open):
        return
    if isinstance(low, int) and isinstance(high, int) and not low_open:
        raise ConfigError(f"{name} must be in {low}..{high}, got {short_repr(value)}")
    raise ConfigError(range_message(name, value, low, high, low_open=low_open))


def range_message(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                  also: str = "") -> str:
    """`NAME must be a finite number in [LOW, HIGH]ALSO, got VALUE` (VALUE kept short)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    return f"{name} must be a finite number in {interval}{also}, got {short_repr(value)}"


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 60, 40, 60
SHORT_REPR_CHARS = 80


def short_repr(value: Any) -> str:
    """repr for an error message, at most SHORT_REPR_CHARS long whatever the value: a YAML alias
    bomb (9^9 shared lists) or a 15 MB list in a config file must not expand into the message."""
    try:
        text = _SHORT.repr(value)
    except ValueError:  # an int past Python's 4300-digit str limit
        if not isinstance(value, int):
            raise
        text = f"<an integer of about {int(value.bit_length() * math.log10(2))} digits>"
    return text if len(text) <= SHORT_REPR_CHARS else text[:SHORT_REPR_CHARS - 3] + "..."
