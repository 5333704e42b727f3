"""ServeConfig: every flag of `dpserve serve` (the replicas' LaunchConfig + the gateway), validated once."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpserve.config import DEFAULT_HOST, DEFAULT_MODEL, nested, option, require
from dpserve.gateway.config import GatewayConfig
from dpserve.launcher.backends import BACKEND_NAMES

DeviceKind = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class LaunchConfig:
    """The replicas: what they run, where they run, and how they are supervised."""

    model: str = option(DEFAULT_MODEL, "bundled model name, HF-format directory, or (vllm/sglang) hub id")
    backend: str = option("builtin", "replica engine", choices=BACKEND_NAMES)
    dp_size: int = option(2, "number of replicas (data parallelism); devices needed = "
                             "replicas × TP × PP (--dp-size × --tp-size × --pp-size)")
    tp_size: int = option(1, "devices per pipeline stage (tensor parallelism inside the replica)")
    pp_size: int = option(1, "pipeline stages per replica (pipeline parallelism inside the replica; "
                             "vllm, sglang): a replica needs --tp-size × --pp-size devices")
    device: DeviceKind = option("auto", "auto = GPUs when any are found, else the CPU")
    gpu_ids: tuple[str, ...] = option((), metavar="ID",
                                      help="GPUs to use, in order (default: all CUDA devices found)")
    replica_host: str = option(DEFAULT_HOST, "address the replicas listen on (with --ray: their node's)")
    engine_args: str = option("", metavar='"FLAGS"',
                              help="extra flags for every replica's engine, one shell-quoted string")
    stagger_s: float = option(1.0, "delay between starting consecutive replicas, seconds")
    startup_timeout_s: float = option(600.0, "a replica not healthy after this long is killed and reported")
    ready_poll_interval_s: float = option(0.25, "seconds between /health probes while a replica starts")
    liveness_timeout_s: float = option(
        60.0, "a ready replica whose /health has not answered for this long is killed and restarted "
              "(0 = never)")
    max_restarts: int = option(5, "restarts of one replica within --restart-window-s before giving up")
    restart_window_s: float = option(600.0, "window over which --max-restarts is counted, seconds")
    restart_backoff_s: float = option(1.0, "delay before the first restart; doubles each time")
    restart_backoff_max_s: float = option(30.0, "longest delay between restarts, seconds")
    replica_grace_s: float = option(10.0, "on stop: seconds between SIGTERM and SIGKILL of a replica")
    log_dir: Path | None = option(None, metavar="DIR",
                                  help="per-replica log files (default: a new directory under the "
                                       "dpserve cache, printed at start)")
    echo_replica_logs: bool = option(True, "copy replica output to our stderr, prefixed with its id")
    kv_events: bool = option(
        True, "replicas whose engine supports it (builtin, sim, vllm) publish KV-cache events "
              "(vLLM's --kv-events-config: ipc PUB socket, replay on a free loopback port; with --ray "
              "tcp://*:PORT and the node's address, ports reserved on the replica's node) and the "
              "gateway is told where; policy precise_prefix routes on them")
    ray: bool = option(False, "place the replicas on a Ray cluster (pip install 'dpserve[ray]'): one "
                              "STRICT_PACK placement group per replica, the replica run by a Ray actor "
                              "on its node and reached by the gateway at http://NODE_IP:PORT")
    ray_address: str | None = option(None, metavar="ADDR",
                                     help="--ray: the cluster's GCS address, e.g. 10.0.0.1:6379 "
                                          "(default: $RAY_ADDRESS, else a new local Ray instance)")
    ray_cpus_per_replica: int = option(1, "--ray: CPUs in each replica's bundle (its threads when it "
                                          "runs on the CPU; the simulator needs only this)")
    write_prometheus_config: Path | None = option(
        None, metavar="PATH", help="write a Prometheus scrape config for the gateway and every replica "
                                   "launched to PATH at start, and again (atomically) when a replica "
                                   "comes back at another address (--ray) (see deploy/prometheus.yml)")

    def __post_init__(self) -> None:
        require(self.dp_size >= 1, f"--dp-size must be >= 1, got {self.dp_size}")
        require(self.tp_size >= 1, f"--tp-size must be >= 1, got {self.tp_size}")
        require(self.pp_size >= 1, f"--pp-size must be >= 1, got {self.pp_size}")
        require(self.stagger_s >= 0, "--stagger-s must be >= 0")
        require(self.startup_timeout_s > 0, "--startup-timeout-s must be > 0")
        require(self.ready_poll_interval_s > 0, "--ready-poll-interval-s must be > 0")
        require(self.max_restarts >= 0, "--max-restarts must be >= 0")
        require(self.liveness_timeout_s >= 0, "--liveness-timeout-s must be >= 0")
        require(self.restart_window_s > 0, "--restart-window-s must be > 0")
        require(0 <= self.restart_backoff_s <= self.restart_backoff_max_s,
                "need 0 <= --restart-backoff-s <= --restart-backoff-max-s")
        require(self.replica_grace_s >= 0, "--replica-grace-s must be >= 0")
        require(self.device != "cpu" or not self.gpu_ids, "--gpu-ids cannot be combined with --device cpu")
        require(self.ray or self.ray_address is None, "--ray-address needs --ray")
        require(not (self.ray and self.gpu_ids), "--gpu-ids cannot be combined with --ray (Ray assigns GPUs)")
        require(self.ray_cpus_per_replica >= 1, "--ray-cpus-per-replica must be >= 1")
        try:
            shlex.split(self.engine_args)
        except ValueError as exc:
            raise ValueError(f"--engine-args is not valid shell quoting: {exc}") from exc

    @property
    def devices_per_replica(self) -> int:
        return self.tp_size * self.pp_size

    @property
    def engine_argv(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.engine_args))


@dataclass(frozen=True)
class ServeConfig:
    """Replicas (LaunchConfig) behind the in-process gateway (GatewayConfig, on its --host/--port).

    The gateway's --worker-urls/--worker-weights/--worker-kv-events are left out: its workers are
    the replicas (and where they publish KV events).
    """

    launch: LaunchConfig = nested(LaunchConfig)
    gateway: GatewayConfig = nested(GatewayConfig,
                                    exclude=("worker_urls", "worker_weights", "worker_kv_events"))
