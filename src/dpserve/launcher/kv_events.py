"""KV events of co-launched replicas: each replica's `--kv-events-config` and where the gateway subscribes.

vLLM's publisher binds its PUB socket only for wildcard (`tcp://*:P`, all interfaces), ipc and
inproc endpoints and *connects* to any other tcp address, so a loopback-only PUB endpoint that
every backend binds is an ipc socket; the replay ROUTER always binds, on 127.0.0.1 (the replicas'
host) and a port from the launcher's allocator. The ipc path is named after that port, which the
allocator holds (flock) for the whole run, so concurrent `dpserve serve`s never collide and a
restarted replica publishes at the same place.
"""

from __future__ import annotations

from pathlib import Path

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.kv_events.config import KVEventsConfig


def replica_kv_events(host: str, replay_port: int, socket_dir: Path) -> tuple[str, KvEventsEndpoint]:
    """(the replica's --kv-events-config JSON, what the gateway connects to)."""
    pub = f"ipc://{socket_dir / f'kv-events-{replay_port}.pub'}"
    replay = f"tcp://{host}:{replay_port}"
    config = KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=pub,
                            replay_endpoint=replay)
    return config.to_json(), KvEventsEndpoint(pub, replay)
