"""The admin surface over real sockets (issue 13): who may change or read the fleet, tenants' keys
never reach a replica, and no worker URL or chain of gateways makes a request loop."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from dpserve.config import ConfigError, build_config
from dpserve.gateway.app import build_app
from dpserve.gateway.config import GatewayConfig
from dpserve.http_server import bind_socket
from tests.integration.gateway.conftest import FAST
from tests.integration.gateway.hardening import CHAT, ask, error_of, request, still_serving

KEYS = "keys:\n  - key: sk-tenant-a\n    tenant: team-a\n  - key: sk-tenant-b\n    tenant: team-b\n"


def _keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS)
    return path


async def test_with_tenant_keys_and_no_admin_key_nobody_changes_the_workers(fake_workers, gateway,  # type: ignore[no-untyped-def]
                                                                            tmp_path: Path) -> None:
    real, intruder = await fake_workers(2)
    gw = await gateway([real], api_keys=_keys(tmp_path), link_key="launcher-only")
    tenant = "Authorization: Bearer sk-tenant-a\r\n"
    async with still_serving(gw.port, tenant):
        add = request("POST", "/workers", orjson.dumps({"url": intruder.url}), tenant)
        status, _, body = await ask(gw.port, add)
        assert status == 403 and error_of(body)["code"] == "admin_key_required"
        status, _, body = await ask(gw.port, request("DELETE", "/workers/w0", extra=tenant))
        assert status == 403
        # the launcher of `dpserve serve` has its own key
        launcher = "Authorization: Bearer launcher-only\r\n"
        status, _, _ = await ask(gw.port, request("GET", "/workers", extra=launcher))
        assert status == 200
    assert [w.url for w in gw.state.registry.all()] == [real.url] and intruder.stats.requests == 0
    assert all("sk-tenant" not in str(h) for h in real.stats.headers)  # never forwarded


async def test_with_an_admin_key_the_fleet_views_need_it_and_never_show_credentials(
        fake_workers, gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w], api_keys=_keys(tmp_path), admin_key="admin-secret")
    admin, tenant = "Authorization: Bearer admin-secret\r\n", "Authorization: Bearer sk-tenant-a\r\n"
    for path in ("/workers", "/get_loads", "/metrics"):
        status, _, body = await ask(gw.port, request("GET", path, extra=tenant))
        assert status == 401 and error_of(body)["code"] == "invalid_admin_key"
        status, _, body = await ask(gw.port, request("GET", path, extra=admin))
        assert status == 200, body
    add = request("POST", "/workers", orjson.dumps({"url": "http://user:pw@127.0.0.1:9"}), admin)
    status, _, body = await ask(gw.port, add)
    assert status == 400 and "pw" not in error_of(body)["message"]


async def test_without_keys_loopback_clients_administer_the_gateway(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    w, extra = await fake_workers(2)
    gw = await gateway([w])
    async with still_serving(gw.port):
        status, _, body = await ask(gw.port, request("POST", "/workers", orjson.dumps({"url": extra.url})))
        assert status == 201, body


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "[::ffff:127.0.0.1]"])
async def test_the_gateway_refuses_itself_as_a_worker(fake_workers, gateway, host: str) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    async with still_serving(gw.port):
        add = request("POST", "/workers", orjson.dumps({"url": f"http://{host}:{gw.port}"}))
        status, _, body = await ask(gw.port, add)
        assert status == 400 and error_of(body)["code"] == "worker_is_gateway"
    assert len(gw.state.registry.all()) == 1


async def test_its_own_url_in_worker_urls_stops_the_start() -> None:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_app(build_config(GatewayConfig, {**FAST, "worker_urls": (f"http://localhost:{port}",)}))
    with pytest.raises(ConfigError, match="this gateway itself"):
        await server.start(sock)
    sock.close()


async def test_a_loop_through_two_gateways_ends_with_508(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    first, second = await gateway([]), await gateway([])
    for gw, other in ((first, second), (second, first)):  # each the other's only worker
        status, _, body = await ask(gw.port, request("POST", "/workers", orjson.dumps({"url": other.url})))
        assert status == 201, body
    fds_before = len(os.listdir("/proc/self/fd"))
    async with still_serving(first.port):
        no_model = orjson.dumps({"messages": [{"role": "user", "content": "loop"}]})
        status, _, body = await ask(first.port, request("POST", CHAT, no_model))
        assert status == 508 and error_of(body)["code"] == "loop_detected"
        assert len(os.listdir("/proc/self/fd")) < fds_before + 50  # no runaway connections
        status, _, _ = await ask(first.port, request("DELETE", "/workers/w0"))  # the loop, undone
        assert status == 204
        status, _, _ = await ask(first.port, request("POST", "/workers", orjson.dumps({"url": w.url})))
        assert status == 201
