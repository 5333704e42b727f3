"""The launch plan: config + the devices found → one ReplicaSpec per replica (ports reserved)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dpserve.config import ConfigError
from dpserve.launcher.backends import Backend, ReplicaSpec, get_backend
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.kv_events import replica_kv_events, with_kv_events
from dpserve.launcher.placement import (
    Placement,
    PlacementError,
    available_cpu_cores,
    detect_gpu_ids,
    devices_needed,
    place_on_cpus,
    place_on_gpus,
)


@dataclass(frozen=True)
class LaunchPlan:
    backend: Backend
    replicas: tuple[ReplicaSpec, ...]
    #: --ray: the bundle of each replica's placement group (its node, port and GPUs come at start).
    ray_bundle: dict[str, float] | None = None

    @property
    def addresses_known(self) -> bool:
        """Whether each replica's host:port is known before it starts (with --ray: once placed)."""
        return self.ray_bundle is None

    @property
    def on_gpu(self) -> bool:
        if self.ray_bundle is not None:
            return self.ray_bundle.get("GPU", 0.0) > 0
        return self.replicas[0].placement.on_gpu

    def with_api_key(self, api_key: str | None) -> LaunchPlan:
        """Every replica asks its clients for `api_key` (the gateway's --replica-api-key), where
        its engine can; None changes nothing."""
        if api_key is None:
            return self
        specs = tuple(dataclasses.replace(spec, api_key=api_key) for spec in self.replicas)
        return dataclasses.replace(self, replicas=specs)

    def with_max_request_bytes(self, max_bytes: int) -> LaunchPlan:
        """Every replica takes bodies up to `max_bytes` (the gateway's --max-request-bytes), where
        its engine has the flag (builtin, sim)."""
        specs = tuple(dataclasses.replace(spec, max_request_bytes=max_bytes) for spec in self.replicas)
        return dataclasses.replace(self, replicas=specs)

    def layout(self) -> str:
        """replicas × TP × PP = devices, and which devices."""
        first = self.replicas[0]
        kind = "GPUs" if self.on_gpu else "devices (replicas on the CPU)"
        return f"{devices_needed(len(self.replicas), first.tp_size, first.pp_size)} {kind}"

    def describe(self) -> str:
        lines = [f"{len(self.replicas)} × {self.backend.name} replica(s), {self.layout()}:"]
        if self.ray_bundle is not None:
            from dpserve.launcher.on_ray.bundles import STRATEGY, format_resources

            lines += [f"  {spec.replica_id}: placed by Ray, bundle {{{format_resources(self.ray_bundle)}}} "
                      f"({STRATEGY}), node and port chosen at start" for spec in self.replicas]
            return "\n".join(lines)
        for spec in self.replicas:
            where = (f"GPUs {','.join(spec.placement.gpu_ids)}" if spec.placement.on_gpu
                     else f"CPU cores {','.join(map(str, spec.placement.cpu_cores))}"
                     f" ({spec.placement.num_threads} threads)")
            lines.append(f"  {spec.replica_id}: {spec.url}  {where}")
        return "\n".join(lines)


def check_parallelism(config: LaunchConfig, backend: Backend) -> None:
    """The backend can run the asked TP and PP (the built-in engine: neither)."""
    for flag, asked, most in (("--tp-size", config.tp_size, backend.max_tp_size),
                              ("--pp-size", config.pp_size, backend.max_pp_size)):
        if most is not None and asked > most:
            raise PlacementError(f"the {backend.name} backend runs {flag} {most} at most, got {asked}")


def compute_placements(config: LaunchConfig, backend: Backend, gpu_ids: Sequence[str],
                       cpu_cores: Sequence[int]) -> list[Placement]:
    """Pure: GPUs when the backend uses devices and GPUs are wanted and present, else CPU cores."""
    check_parallelism(config, backend)
    wants_gpus = backend.uses_devices and config.device != "cpu"
    gpus = tuple(config.gpu_ids) or tuple(gpu_ids)
    if config.device == "cuda" and backend.uses_devices and not gpus:
        raise PlacementError("--device cuda but no CUDA devices found "
                             "(set --gpu-ids or CUDA_VISIBLE_DEVICES)")
    if wants_gpus and gpus:
        try:
            return place_on_gpus(config.dp_size, config.tp_size, gpus, config.pp_size)
        except PlacementError as exc:
            if config.device == "auto":
                raise PlacementError(f"{exc}, or --device cpu to run the replicas on the CPU") from exc
            raise
    return place_on_cpus(config.dp_size, cpu_cores)


def resolve_model_path(model: str, backend: Backend) -> str:
    """What the engine loads: bundled names become their converted directory for engines that
    cannot resolve them (vLLM, SGLang); anything else is passed through."""
    if backend.resolves_model_locally:
        from dpserve.model_store.resolver import check_model_name

        try:  # cheap: no conversion here, the replicas do it once under the model store's lock
            check_model_name(model)
        except ValueError as exc:
            raise ConfigError(f"--model: {exc}") from exc
        return model
    if not backend.needs_model_path:
        return model
    from dpserve.model_store.bundled import BUNDLED_MODELS

    if model in BUNDLED_MODELS:
        from dpserve.model_store import resolve_model

        return str(resolve_model(model).path)
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def build_plan(config: LaunchConfig, ports: Sequence[int], gpu_ids: Sequence[str] | None = None,
               cpu_cores: Sequence[int] | None = None, kv_event_ports: Sequence[int] | None = None,
               socket_dir: Path | None = None) -> LaunchPlan:
    """Specs for every replica; `ports` must hold one reserved port per replica, and so must
    `kv_event_ports` (replay sockets) when given: then each replica publishes KV events (its ipc
    PUB socket in `socket_dir`)."""
    backend = get_backend(config.backend)
    try:
        placements = compute_placements(
            config, backend, detect_gpu_ids() if gpu_ids is None else gpu_ids,
            available_cpu_cores() if cpu_cores is None else cpu_cores)
    except PlacementError as exc:
        raise ConfigError(str(exc)) from exc
    model_path = resolve_model_path(config.model, backend)
    specs = tuple(
        ReplicaSpec(replica_id=f"r{p.index}", model=config.model, model_path=model_path,
                    host=config.replica_host, port=port, tp_size=config.tp_size, pp_size=config.pp_size,
                    placement=p,
                    engine_args=config.engine_argv)
        for p, port in zip(placements, ports, strict=True))
    if kv_event_ports is not None:
        specs = tuple(with_kv_events(spec, *replica_kv_events(config.replica_host, kv_port,
                                                              socket_dir or Path(".")))
                      for spec, kv_port in zip(specs, kv_event_ports, strict=True))
    return LaunchPlan(backend, specs)
