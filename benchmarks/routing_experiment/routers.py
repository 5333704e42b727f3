"""The routers of the experiment: `dpserve router --policy NAME` or (`sglang:POLICY`) SGLang's router,
started in front of a fleet and ready to take the bench's requests.

SGLang's router learns a worker's model from SGLang's own `/model_info` / `/server_info`, which
`dpserve sim` does not serve, so with `--worker-urls` it names every worker's model `unknown` (its
`/v1/models` says so, while it still forwards any `model` it is sent). A dpserve gateway in front of
it (the `2x:` runs) then answers 404 "model `smollm2-135m` does not exist; available: unknown" to
every request. So SGLang's router starts without workers and gets each one by `POST /workers` with
`model_id` (its API's way to name the model), the same for one and for two gateways.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet import HOST, READY_TIMEOUT_S, free_port, kv_events_spec, router

SGLANG = "sglang:"
MODEL = "smollm2-135m"
sglang_python = Path("/tmp/sglvenv/bin/python")  # run.py's --sglang-python sets it


def dpserve_router(port: int, policy: str, workers: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "dpserve", "router", "--host", HOST, "--port", str(port),
            "--policy", policy, "--worker-urls", *workers]
    specs = [kv_events_spec(w) for w in workers]
    if all(specs):
        argv += ["--kv-events-tokenizer", "sim", "--worker-kv-events", *(s for s in specs if s)]
    return argv


def sglang_router(port: int, policy: str) -> list[str]:
    return [str(sglang_python), "-m", "sglang_router.launch_router", "--host", HOST, "--port", str(port),
            "--policy", policy, "--log-level", "warn",
            "--prometheus-port", str(free_port())]  # its default port stays taken between runs


def _json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5.0) as resp:
        out: dict[str, object] = json.loads(resp.read())
        return out


def register_with_sglang(url: str, workers: list[str], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Add `workers` to SGLang's router at `url` with their model, and wait until all are healthy."""
    for worker in workers:
        _json(url + "/workers", {"url": worker, "model_id": MODEL})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            listed = _json(url + "/workers").get("workers")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            listed = None
        if isinstance(listed, list) and sorted(w.get("url") for w in listed if w.get("is_healthy")) \
                == sorted(workers):
            return
        time.sleep(0.2)
    raise TimeoutError(f"SGLang's router at {url} did not list {len(workers)} healthy workers "
                       f"after {timeout_s}s")


@contextmanager
def started(router_name: str, workers: list[str], log_path: Path) -> Iterator[str]:
    """The router `router_name` on a free loopback port in front of `workers`; yields its URL once
    it routes to all of them (dpserve: /readiness; SGLang: its workers listed healthy)."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    policy = router_name.removeprefix(SGLANG)
    if policy == router_name:
        with router(dpserve_router(port, policy, workers), url, "/readiness", log_path):
            yield url
        return
    with router(sglang_router(port, policy), url, "/health", log_path):
        register_with_sglang(url, workers)
        yield url
