"""`sglang`: SGLang's server, one per replica, TP inside the replica."""

from __future__ import annotations

from dpserve.launcher.backends.base import Backend, ReplicaSpec


class SglangBackend(Backend):
    name = "sglang"
    needs_model_path = True  # bundled names mean nothing to it
    requires_module = "sglang"

    def command(self, spec: ReplicaSpec) -> list[str]:
        return [spec.python, "-m", "sglang.launch_server", "--model-path", spec.model_path,
                "--served-model-name", spec.model, "--tp", str(spec.tp_size),
                "--pipeline-parallel-size", str(spec.pp_size),
                "--host", spec.host, "--port", str(spec.port), *spec.engine_args]
