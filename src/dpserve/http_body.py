"""A response body read from a peer we do not control (a replica's /metrics, a gateway's /workers).

Capped after decompression and read a piece at a time: aiohttp (≥ 3.14, our floor) inflates a
gzip/deflate body only as far as its buffer has room and goes on as the reader drains it, so a
small body that inflates to gigabytes stops at the cap. Text is decoded with replacement: bytes
that are not UTF-8 are the peer's mistake, not a reason to stop reading it.
"""

from __future__ import annotations

import aiohttp

MAX_BODY_BYTES = 8 * 2**20  # a vLLM /metrics is 50-300 KB, a 256-replica /workers ~100 KB


class BodyTooLarge(ValueError):
    """An answer past the cap."""


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body, decompressed; BodyTooLarge past `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"the answer is larger than {max_bytes // 2**20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_text(resp: aiohttp.ClientResponse, max_bytes: int = MAX_BODY_BYTES) -> str:
    """`read_capped`, decoded as UTF-8 with replacement."""
    return (await read_capped(resp, max_bytes)).decode("utf-8", errors="replace")
