"""One stand-in gateway process for the shared-quota test: fire requests at a start time, print counts.

usage: python -m tests.integration.admission.quota_client REDIS_URL KEYS_FILE API_KEY N START_AT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dpserve.errors import HTTPError
from dpserve.gateway.admission import AdmissionConfig, AdmissionContext, WorkerLoad, build_admission


class AlwaysRoom:
    def has_capacity(self) -> bool:
        return True

    def load_snapshot(self) -> Sequence[WorkerLoad]:
        return [WorkerLoad("w", True)]


async def main(redis_url: str, keys: Path, api_key: str, n: int, start_at: float) -> dict[str, int]:
    adm = build_admission(AdmissionConfig(api_keys=keys, redis_url=redis_url), AlwaysRoom())
    await adm.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    counts = {"admitted": 0, "rejected": 0}
    for _ in range(n):
        try:
            ticket = await adm.admit({"Authorization": f"Bearer {api_key}"}, AdmissionContext(8, 4))
        except HTTPError as exc:
            counts["rejected"] += exc.status == 429
            continue
        counts["admitted"] += 1
        ticket.release(2, 2)
    await adm.stop()
    return counts


if __name__ == "__main__":
    url, keys_path, key, count, at = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(url, Path(keys_path), key, int(count), float(at)))))
