"""`sim`: the simulated replica (`dpserve sim`); needs no device and no model files."""

from __future__ import annotations

from dpserve.launcher.backends.base import Backend, ReplicaSpec


class SimBackend(Backend):
    name = "sim"
    uses_devices = False

    publishes_kv_events = True
    max_request_bytes_flag = "--max-request-bytes"

    def kv_events_tokenizer(self, model: str, model_path: str) -> str:
        return "sim"  # the simulator's own tokenizer, whatever --model names

    def command(self, spec: ReplicaSpec) -> list[str]:
        return [spec.python, "-m", "dpserve", "sim", "--model", spec.model, "--host", spec.host,
                "--port", str(spec.port), *self.request_limit_args(spec), *spec.engine_args]
