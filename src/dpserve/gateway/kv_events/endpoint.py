"""Where a replica publishes its KV events, as the gateway is told (flag or `POST /workers` field)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SCHEMES = ("tcp://", "ipc://")
NO_EVENTS = "-"


@dataclass(frozen=True)
class KvEventsEndpoint:
    """The PUB endpoint to connect to, the replay ROUTER's (if any) and the topic to subscribe to."""

    endpoint: str
    replay_endpoint: str | None = None
    topic: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "replay_endpoint": self.replay_endpoint, "topic": self.topic}


# What a subscriber can connect to: tcp://HOST:PORT (a name, an IPv4 address or [IPv6]) or
# ipc://PATH (libzmq's limit for a socket path is 107 bytes). libzmq refuses anything else at
# connect time, after the flag was taken: a typo must be refused here.
_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})")
_IPC = re.compile(r"ipc://[^\x00]{1,107}")


def _check(name: str, value: Any) -> str:
    bad = ValueError(f"{name} must be a ZMQ endpoint (tcp://host:port, ipc://path), got {value!r}"[:300])
    if not isinstance(value, str) or not value.startswith(_SCHEMES) or len(value) > 1024:
        raise bad
    tcp = _TCP.fullmatch(value)
    if not (tcp and 1 <= int(tcp.group(2)) <= 65535) and not _IPC.fullmatch(value):
        raise bad
    return value


def parse_endpoint_spec(spec: str) -> KvEventsEndpoint | None:
    """`--worker-kv-events` entry: `PUB[,REPLAY]`, or `-` for a worker that publishes nothing."""
    if spec == NO_EVENTS:
        return None
    pub, _, replay = spec.partition(",")
    return KvEventsEndpoint(_check("the endpoint", pub),
                            _check("the replay endpoint", replay) if replay else None)


def endpoint_from_json(value: Any) -> KvEventsEndpoint:
    """`POST /workers` `kv_events`: {"endpoint", "replay_endpoint"?, "topic"?}; ValueError says why."""
    if not isinstance(value, dict):
        raise ValueError("must be an object {\"endpoint\": ..., \"replay_endpoint\"?: ..., \"topic\"?: ...}")
    unknown = set(value) - {"endpoint", "replay_endpoint", "topic"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; valid: endpoint, replay_endpoint, topic")
    replay = value.get("replay_endpoint")
    topic = value.get("topic", "")
    if not isinstance(topic, str) or len(topic) > 256:
        raise ValueError("'topic' must be a string")
    return KvEventsEndpoint(_check("'endpoint'", value.get("endpoint")),
                            None if replay is None else _check("'replay_endpoint'", replay), topic)
