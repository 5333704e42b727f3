"""GET /workers shows where each worker publishes its KV events (from --worker-kv-events or the
`kv_events` of POST /workers), in the shape POST /workers takes, so that a second gateway can be
pointed at the same replicas' events; every other field stays."""

from __future__ import annotations

# The fields /work/shared/interfaces.md promises, and those added since; none may go.
CONTRACT_FIELDS = {"id", "url", "healthy", "circuit_state", "in_flight", "running", "waiting",
                   "kv_cache_usage", "weight", "draining", "load", "refused", "name", "restarts"}


async def test_flags_and_post_workers_both_show_in_get_workers(fake_workers, gateway, client) -> None:
    first, second, third = await fake_workers(3)
    specs = ("ipc:///tmp/dpserve-r0.pub,tcp://127.0.0.1:5558", "-")
    gw = await gateway([first, second], worker_kv_events=specs)
    published = {"endpoint": "tcp://10.0.0.7:5557", "replay_endpoint": None, "topic": "kv"}
    async with client.post(gw.url + "/workers", json={"url": third.url, "kv_events": published}) as resp:
        assert resp.status == 201
        assert (await resp.json())["kv_events"] == published
    async with client.get(gw.url + "/workers") as resp:
        rows = await resp.json()
    assert [r["kv_events"] for r in rows] == [
        {"endpoint": "ipc:///tmp/dpserve-r0.pub", "replay_endpoint": "tcp://127.0.0.1:5558", "topic": ""},
        None,  # "-": it publishes nothing
        published]
    assert all(set(r) > CONTRACT_FIELDS for r in rows)
