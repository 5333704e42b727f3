"""Joins replicas to the gateway and takes them out, over its public HTTP API.

`POST /workers` and `DELETE /workers/{id}` are the gateway's contract (docs/interfaces), so this
works the same for the in-process gateway and a remote `dpserve router`.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import aiohttp

from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint

logger = logging.getLogger(__name__)

_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
_DRAIN_TIMEOUT = aiohttp.ClientTimeout(total=120.0)  # DELETE waits for the worker's in-flight requests


class GatewayLink:
    """Tracks which gateway worker id each replica was given."""

    def __init__(self, gateway_url: str, http: aiohttp.ClientSession, admin_key: str | None = None) -> None:
        self._url = gateway_url.rstrip("/")
        self._http = http
        self._headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self._worker_ids: dict[str, str] = {}  # replica id → gateway worker id
        self._closed = False

    def worker_id(self, replica_id: str) -> str | None:
        return self._worker_ids.get(replica_id)

    async def add(self, replica_id: str, replica_url: str, kv_events: KvEventsEndpoint | None = None,
                  restarts: int = 0) -> bool:
        """Register the replica under its name with its restart count (the dashboard shows both)
        and where it publishes KV events; True once the gateway has it."""
        if self._closed:
            return False
        await self.remove(replica_id)  # a restarted replica may still be listed under its old id
        try:
            worker_id = await self._post_worker(replica_url, kv_events, replica_id, restarts)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.error("could not add replica %s (%s) to the gateway: %s", replica_id, replica_url, exc)
            return False
        self._worker_ids[replica_id] = worker_id
        logger.info("replica %s joined the gateway as worker %s (%s)", replica_id,
                    self._worker_ids[replica_id], replica_url)
        return True

    async def _post_worker(self, replica_url: str, kv_events: KvEventsEndpoint | None, name: str,
                           restarts: int) -> str:
        """POST /workers; the gateway's worker id. A 409 (url already listed, e.g. a removal that
        failed) is fine: the id is looked up."""
        body: dict[str, object] = {"url": replica_url, "name": name, "restarts": restarts}
        if kv_events is not None:
            body["kv_events"] = kv_events.to_json()
        async with self._http.post(f"{self._url}/workers", json=body, headers=self._headers,
                                   timeout=_TIMEOUT) as resp:
            if resp.status == 409:
                return await self._find_worker_id(replica_url)
            if resp.status >= 300:
                raise ValueError(f"gateway answered {resp.status}: {(await resp.text())[:300]}")
            body = await resp.json(content_type=None)
        return str(body["id"]) if isinstance(body, dict) and "id" in body else replica_url

    async def _find_worker_id(self, replica_url: str) -> str:
        async with self._http.get(f"{self._url}/workers", headers=self._headers, timeout=_TIMEOUT) as resp:
            body = await resp.json(content_type=None)
        workers = body.get("workers", []) if isinstance(body, dict) else body
        for worker in workers:
            if str(worker.get("url", "")).rstrip("/") == replica_url.rstrip("/"):
                return str(worker["id"])
        raise ValueError(f"gateway says {replica_url} is listed, but /workers does not show it")

    async def remove(self, replica_id: str) -> None:
        """Deregister the replica if it is registered; a missing worker is not an error."""
        worker_id = self._worker_ids.pop(replica_id, None)
        if worker_id is None or self._closed:
            return
        try:
            url = f"{self._url}/workers/{quote(worker_id, safe='')}"
            async with self._http.delete(url, headers=self._headers, timeout=_DRAIN_TIMEOUT) as resp:
                if resp.status not in (200, 202, 204, 404):
                    logger.warning("gateway answered %s removing worker %s", resp.status, worker_id)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("could not remove worker %s from the gateway: %s", worker_id, exc)
        else:
            logger.info("replica %s left the gateway", replica_id)

    def close(self) -> None:
        """The gateway is going away: stop calling it."""
        self._closed = True
