"""`sglang`: SGLang's server, one per replica, TP inside the replica."""

from __future__ import annotations

from dpserve.launcher.backends.base import Backend, ReplicaSpec


class SglangBackend(Backend):
    name = "sglang"
    needs_model_path = True  # bundled names mean nothing to it
    requires_module = "sglang"
    api_key_flag = "--api-key"  # guards all but /health (and /metrics in recent releases)

    def command(self, spec: ReplicaSpec) -> list[str]:
        # SGLang has no per-path filter: its HTTP log at warning drops the uvicorn access line of
        # every request, the gateway's polls included (`--log-requests` logs requests instead).
        return [spec.python, "-m", "sglang.launch_server", "--model-path", spec.model_path,
                "--served-model-name", spec.model, "--tp", str(spec.tp_size),
                "--pipeline-parallel-size", str(spec.pp_size),
                "--host", spec.host, "--port", str(spec.port), "--log-level-http", "warning",
                *self.api_key_args(spec), *spec.engine_args]
