"""`--kv-events-config JSON`: vLLM's KVEventsConfig keys, parsed and validated once."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from dpserve.config import ConfigError

DEFAULT_ENDPOINT = "tcp://*:5557"  # vLLM's default PUB endpoint
FLAG_HELP = (
    "publish KV-cache events as vLLM does, a JSON object with vLLM's keys: "
    '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557", '
    '"replay_endpoint": null, "buffer_steps": 10000, "hwm": 100000, "max_queue_size": 100000, '
    '"topic": ""}. As in vLLM the PUB socket binds a wildcard/ipc/inproc endpoint and connects to '
    "any other; the replay ROUTER socket always binds. Default: no events")


@dataclass(frozen=True)
class KVEventsConfig:
    """vLLM's KVEventsConfig (same keys and defaults)."""

    enable_kv_cache_events: bool = False
    publisher: str | None = None  # "zmq" or "null"; None: "zmq" when enabled
    endpoint: str = DEFAULT_ENDPOINT
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""

    @property
    def is_publishing(self) -> bool:
        return self.enable_kv_cache_events and self.resolved_publisher == "zmq"

    @property
    def resolved_publisher(self) -> str:
        if self.publisher is not None:
            return self.publisher
        return "zmq" if self.enable_kv_cache_events else "null"

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})


_TYPES: dict[str, tuple[type, ...]] = {
    "enable_kv_cache_events": (bool,), "publisher": (str, type(None)), "endpoint": (str,),
    "replay_endpoint": (str, type(None)), "buffer_steps": (int,), "hwm": (int,),
    "max_queue_size": (int,), "topic": (str,),
}


def _check(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if key not in _TYPES:
            raise ConfigError(f"--kv-events-config: unknown key {key!r}; valid: {', '.join(_TYPES)}")
        types = _TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(f"--kv-events-config: {key!r} must be {names}, got {value!r}")
    if values.get("publisher") not in (None, "zmq", "null"):
        raise ConfigError(f"--kv-events-config: 'publisher' must be \"zmq\" or \"null\", got "
                          f"{values['publisher']!r}")
    for key in ("buffer_steps", "hwm", "max_queue_size"):
        if key in values and values[key] < 1:
            raise ConfigError(f"--kv-events-config: {key!r} must be >= 1")


def parse_kv_events_config(text: str | None) -> KVEventsConfig | None:
    """The flag's JSON → config (None when the flag is absent); ConfigError names what is wrong."""
    if text is None:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--kv-events-config is not valid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError("--kv-events-config must be a JSON object")
    _check(values)
    return KVEventsConfig(**values)
