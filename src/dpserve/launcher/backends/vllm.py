"""`vllm`: vLLM's OpenAI-compatible server, one per replica, TP inside the replica."""

from __future__ import annotations

from dpserve.launcher.backends.base import Backend, ReplicaSpec


class VllmBackend(Backend):
    name = "vllm"
    needs_model_path = True  # bundled names mean nothing to it
    requires_module = "vllm"

    publishes_kv_events = True

    def command(self, spec: ReplicaSpec) -> list[str]:
        return [spec.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path,
                "--served-model-name", spec.model, "--tensor-parallel-size", str(spec.tp_size),
                "--host", spec.host, "--port", str(spec.port), *spec.engine_args]
