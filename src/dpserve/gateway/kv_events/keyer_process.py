"""The tokenizer process of precise_prefix: its main loop, and the frames both ends of its pipes use.

A frame is a 4-byte big-endian length and a pickle (both ends are this package, in processes the
gateway spawned). The process loads the tokenizer, answers `("ready", note)` (whether chat
history is remembered, and why not) or `("failed", why)`, then answers each request `(seq,
endpoint, body, block_size)` in order with `(seq, block_keys_for's result)`, until its request
pipe reaches EOF (the gateway closed it, or died).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")


def encode_frame(obj: Any) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def take_frames(buffer: bytearray) -> list[Any]:
    """Decode and remove the whole frames at the start of `buffer`; a partial one stays."""
    frames, start, size = [], 0, len(buffer)
    while size - start >= _HEADER.size:
        (n,) = _HEADER.unpack_from(buffer, start)
        end = start + _HEADER.size + n
        if end > size:
            break
        frames.append(pickle.loads(memoryview(buffer)[start + _HEADER.size:end]))
        start = end
    del buffer[:start]
    return frames


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None  # EOF
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> Any:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    payload = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if payload is None else pickle.loads(payload)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(tokenizer_spec: str, requests: Connection, replies: Connection) -> None:
    """The process's main: blocking reads and writes on its two pipe ends (the Connections only
    carry the file descriptors to the spawned process; their own framing is not used)."""
    # Its life is the pipe's: EOF or a broken pipe ends it, and the gateway kills it on close;
    # a signal to the whole process group (Ctrl-C, a supervisor's SIGTERM) is the gateway's to act on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the gateway went away mid-reply
        _serve(tokenizer_spec, requests.fileno(), replies.fileno())


def _serve(tokenizer_spec: str, requests_fd: int, replies_fd: int) -> None:
    from dpserve.gateway.kv_events.prompt_keys import block_keys_for, load_tokenizer
    from dpserve.serving.encode_memo import DEFAULT_MAX_BYTES

    try:
        # A chat's history is re-sent, and re-keyed, every turn: its messages' ids are remembered.
        tokenizer = load_tokenizer(tokenizer_spec, memo_bytes=DEFAULT_MAX_BYTES)
        block_keys_for(tokenizer, "/v1/completions", {"prompt": "warm up"}, 1)  # its lazy imports
    except Exception as e:  # any failure to load is reported, not raised
        _write_all(replies_fd, encode_frame(("failed", f"{type(e).__name__}: {e}")))
        return
    memo_note = getattr(tokenizer, "no_memo_reason", None)  # the sim's tokenizer always has a memo
    _write_all(replies_fd, encode_frame(("ready", "chat history remembered" if memo_note is None
                                         else f"no chat history memo: {memo_note}")))
    failures = 0
    while (request := _read_frame(requests_fd)) is not None:
        seq, endpoint, body, block_size = request
        try:
            result = block_keys_for(tokenizer, endpoint, body, block_size)
        except Exception:  # one odd body must not end the process; a traceback once, then a count
            failures += 1
            if failures == 1 or failures % 1000 == 0:
                log.exception("precise_prefix: computing a request's block keys failed (%d so far)", failures)
            result = None
        _write_all(replies_fd, encode_frame((seq, result)))
