"""`vllm`: vLLM's OpenAI-compatible server, one per replica, TP inside the replica."""

from __future__ import annotations

from dpserve.launcher.backends.base import Backend, ReplicaSpec


class VllmBackend(Backend):
    name = "vllm"
    needs_model_path = True  # bundled names mean nothing to it
    requires_module = "vllm"

    publishes_kv_events = True

    def command(self, spec: ReplicaSpec) -> list[str]:
        argv = [spec.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path,
                "--served-model-name", spec.model, "--tensor-parallel-size", str(spec.tp_size),
                "--pipeline-parallel-size", str(spec.pp_size),
                "--host", spec.host, "--port", str(spec.port)]
        if spec.on_ray:
            # vLLM's Ray executor loses the placement group's context in a process started by an
            # actor (vLLM issue #30016); its multiprocessing executor uses the GPUs it is given.
            argv += ["--distributed-executor-backend", "mp"]
        return argv + list(spec.engine_args)
