"""`vllm`: vLLM's OpenAI-compatible server, one per replica, TP inside the replica."""

from __future__ import annotations

from dpserve.launcher.backends.base import GATEWAY_POLL_PATHS, Backend, ReplicaSpec

# The gateway's health probes and load polls are ~3 requests/s per replica: without this vLLM's
# console was 634 access lines in 3 minutes, nothing else. Requests keep their access lines.
# (vLLM >= 0.16 has the flag; the launcher was checked with 0.32.)
QUIET_POLLS = ("--disable-access-log-for-endpoints", ",".join(GATEWAY_POLL_PATHS))


class VllmBackend(Backend):
    name = "vllm"
    needs_model_path = True  # bundled names mean nothing to it
    requires_module = "vllm"

    publishes_kv_events = True
    api_key_flag = "--api-key"  # guards /v1/*; /health and /metrics stay open for the probes

    def command(self, spec: ReplicaSpec) -> list[str]:
        argv = [spec.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path,
                "--served-model-name", spec.model, "--tensor-parallel-size", str(spec.tp_size),
                "--pipeline-parallel-size", str(spec.pp_size),
                "--host", spec.host, "--port", str(spec.port), *QUIET_POLLS]
        if spec.on_ray:
            # vLLM's Ray executor loses the placement group's context in a process started by an
            # actor (vLLM issue #30016); its multiprocessing executor uses the GPUs it is given.
            argv += ["--distributed-executor-backend", "mp"]
        return argv + self.api_key_args(spec) + list(spec.engine_args)
