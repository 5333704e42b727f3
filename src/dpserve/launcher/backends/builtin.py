"""`builtin`: the PyTorch engine of this package (`dpserve engine`)."""

from __future__ import annotations

from dpserve.launcher.backends.base import Backend, ReplicaSpec


class BuiltinBackend(Backend):
    name = "builtin"
    max_tp_size = 1  # the built-in engine runs a model on one device
    max_pp_size = 1  # ... and has no pipeline stages
    resolves_model_locally = True

    publishes_kv_events = True
    max_request_bytes_flag = "--max-request-bytes"

    def command(self, spec: ReplicaSpec) -> list[str]:
        argv = [spec.python, "-m", "dpserve", "engine", "--model", spec.model_path,
                "--served-model-name", spec.model, "--host", spec.host, "--port", str(spec.port),
                "--device", "cuda" if spec.placement.on_gpu else "cpu"]
        if spec.placement.num_threads is not None:
            argv += ["--num-threads", str(spec.placement.num_threads)]
        return argv + self.request_limit_args(spec) + list(spec.engine_args)
