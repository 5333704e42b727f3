"""CPU per chunk of the armed stream relay alone (gateway/migration/job.py): no sockets.

`ResumeJob.relay` of a streaming chat request's first stream over a fake upstream (the vLLM-shaped
events of gateway_overhead.py's replicas: prompt ids in the first chunk, `token_ids` in every
chunk, which the relay strips) and a sink that drops what it gets; prints the best of 5 rounds in
CPU ns per chunk. Compare source trees by putting each first on PYTHONPATH, alternating:

    for i in 1 2 3; do for t in /tmp/old-src/src src; do
        echo "$t $(PYTHONPATH=$t .venv/bin/python benchmarks/armed_relay_micro.py 2000)"; done; done
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson

from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.migration.job import ResumeJob
from dpserve.gateway.routing_text import parse_request
from dpserve.http_names import CHAT_PATH


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


_ENV = {"id": "x", "object": "chat.completion.chunk"}
CHUNKS = ([_sse({**_ENV, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                 "prompt_token_ids": list(range(1000, 1040))})]
          + [_sse({**_ENV, "choices": [{"index": 0, "delta": {"content": "tok"}, "token_ids": [4242]}]})] * 98
          + [_sse({**_ENV, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
             b"data: [DONE]\n\n"])


class _Upstream:
    def __init__(self) -> None:
        self.headers = {"content-type": "text/event-stream"}
        self._next = 1

    async def next_chunk(self) -> bytes:
        i = self._next
        if i >= len(CHUNKS):
            return b""
        self._next = i + 1
        return CHUNKS[i]


class _Sink:
    started = False

    async def start(self, headers: dict[str, str]) -> None:
        self.started = True

    async def write(self, data: bytes) -> None:
        pass

    async def end(self) -> None:
        pass


async def _round(streams: int) -> float:
    raw = orjson.dumps({"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    parsed = parse_request(CHAT_PATH, raw, {})
    metrics, config = GatewayMetrics("round_robin"), MigrationConfig()
    started = time.process_time()
    for _ in range(streams):
        job = ResumeJob(CHAT_PATH, raw, parsed, config, metrics, time.monotonic, None)
        reason = await job.relay(_Upstream(), CHUNKS[0], _Sink(), {}, 0.0)  # type: ignore[arg-type]
        assert reason is None, reason
    return (time.process_time() - started) / (streams * len(CHUNKS)) * 1e9


def main() -> None:
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"{min(asyncio.run(_round(streams)) for _ in range(5)):.0f} ns/chunk")


if __name__ == "__main__":
    main()
