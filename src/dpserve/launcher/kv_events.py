"""KV events of co-launched replicas: each replica's `--kv-events-config` and where the gateway subscribes.

vLLM's publisher binds its PUB socket only for wildcard (`tcp://*:P`, all interfaces), ipc and
inproc endpoints and *connects* to any other tcp address; the replay ROUTER always binds.
- On this host (`replica_kv_events`) every backend binds an ipc PUB socket, loopback-only; the
  replay ROUTER binds 127.0.0.1 and a port from the launcher's allocator. The ipc path is named
  after that port, which the allocator holds (flock) for the whole run, so concurrent `dpserve
  serve`s never collide and a restarted replica publishes at the same place.
- On a Ray node (`node_kv_events`) an ipc socket or a loopback port would be out of the gateway's
  reach, so the PUB socket binds `tcp://*:P` (the only tcp form vLLM binds) and the replay ROUTER
  the node's address, both on ports the replica's actor reserved on its node; the gateway
  connects to `tcp://NODE_IP:P`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.kv_events.config import KVEventsConfig
from dpserve.launcher.backends import Backend, ReplicaSpec
from dpserve.launcher.config import LaunchConfig


def wants_kv_events(launch: LaunchConfig, backend: Backend) -> bool:
    """`--kv-events` (default on) for an engine that publishes them."""
    return launch.kv_events and backend.publishes_kv_events


def replica_kv_events(host: str, replay_port: int, socket_dir: Path) -> tuple[str, KvEventsEndpoint]:
    """A replica on this host: (its --kv-events-config JSON, what the gateway connects to)."""
    pub = f"ipc://{socket_dir / f'kv-events-{replay_port}.pub'}"
    replay = f"tcp://{host}:{replay_port}"
    return _config_json(pub, replay), KvEventsEndpoint(pub, replay)


def node_kv_events(node_ip: str, pub_port: int, replay_port: int) -> tuple[str, KvEventsEndpoint]:
    """A replica on a Ray node: PUB on every interface of its node, replay on the node's address."""
    host = f"[{node_ip}]" if ":" in node_ip else node_ip
    replay = f"tcp://{host}:{replay_port}"
    return (_config_json(f"tcp://*:{pub_port}", replay),
            KvEventsEndpoint(f"tcp://{host}:{pub_port}", replay))


def with_kv_events(spec: ReplicaSpec, config_json: str, endpoint: KvEventsEndpoint) -> ReplicaSpec:
    """The flag goes before --engine-args, so a --kv-events-config there still wins."""
    return dataclasses.replace(spec, engine_args=("--kv-events-config", config_json, *spec.engine_args),
                               kv_events=endpoint)


def _config_json(pub: str, replay: str) -> str:
    return KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=pub,
                          replay_endpoint=replay).to_json()
