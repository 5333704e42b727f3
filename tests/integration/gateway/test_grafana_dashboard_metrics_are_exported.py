"""Every metric deploy/grafana/dpserve.json queries is one dpserve exports: the names are read from the
real /metrics of a gateway in front of a simulated replica after real requests, not from a list."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp import web

from dpserve.http_server import bind_socket
from dpserve.serving.app import create_replica_app
from dpserve.sim.config import SimConfig
from dpserve.sim.engine import SimEngine
from tests.integration.gateway.conftest import chat

DASHBOARD = Path(__file__).parents[3] / "deploy" / "grafana" / "dpserve.json"
# Every series dpserve defines starts so (the gateway's, the replicas' vLLM names, dpserve:* gauges).
_QUERIED = re.compile(r"\b(?:dpserve_|dpserve:|vllm:)[A-Za-z0-9_:]*")
_TYPE = re.compile(r"^# TYPE (\S+) (\w+)", re.M)
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", re.M)


def exported_names(text: str) -> set[str]:
    """Names a Prometheus server would store from this exposition (histograms: _bucket, _sum, _count)."""
    names = set(_SAMPLE.findall(text))
    for name, kind in _TYPE.findall(text):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def queried_names(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in _QUERIED.findall(expr)}


async def test_every_queried_metric_is_exported(gateway, client) -> None:
    sim = SimConfig(served_model_name="fake-model")
    runner = web.AppRunner(create_replica_app(SimEngine(sim.engine), sim.model_name), access_log=None)
    await runner.setup()
    sock = bind_socket("127.0.0.1", 0)
    await web.SockSite(runner, sock).start()
    replica_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:

        class Replica:
            url = replica_url

        gw = await gateway([Replica()])
        for stream in (False, True):
            async with client.post(gw.url + "/v1/chat/completions", json=chat("hello", stream=stream,
                                                                              max_tokens=4)) as resp:
                assert resp.status == 200
                await resp.read()
        exported: set[str] = set()
        for url in (gw.url, replica_url):
            async with client.get(url + "/metrics") as resp:
                exported |= exported_names(await resp.text())
    finally:
        await runner.cleanup()
    queried = queried_names(json.loads(DASHBOARD.read_text()))
    assert len(queried) >= 20
    assert queried <= exported, f"queried but not exported: {sorted(queried - exported)}"


def test_the_name_extraction_reads_types_and_samples() -> None:
    text = ('# TYPE a_seconds histogram\na_seconds_bucket{le="1"} 2\n# TYPE b_total counter\n'
            'vllm:x{model_name="m"} 1\n')
    assert exported_names(text) == {"a_seconds", "a_seconds_bucket", "a_seconds_sum", "a_seconds_count",
                                    "b_total", "vllm:x"}
    assert queried_names({"panels": [{"targets": [{"expr": 'rate(vllm:x[1m]) / dpserve_y{a="b"}'}]}]}) == \
        {"vllm:x", "dpserve_y"}
