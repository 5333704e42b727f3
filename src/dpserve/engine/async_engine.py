"""AsyncEngine: the EngineClient of the built-in engine — the asyncio side of the engine core process.

Requests go to the core (core_process.py) through a sender thread, so a long prompt never blocks
the event loop on a full pipe; the core's per-step deltas are read on the event loop itself
(`add_reader` on the pipe), one message per step, and fanned out to each request's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Literal

from dpserve.engine.config import EngineConfig
from dpserve.engine.core_process import engine_core_main
from dpserve.engine.models.llama_args import LlamaArgs
from dpserve.engine.prompt_limits import check_prompt
from dpserve.engine.tokenizer import HFTokenizer
from dpserve.serving.engine_client import EngineError, EngineStats, GenerateRequest, TokenDelta, Tokenizer

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


class EngineCoreError(RuntimeError):
    """The engine core process failed to start or died."""


class AsyncEngine:
    """Owns the engine core process and the pipes to it; one instance per replica server."""

    def __init__(self, config: EngineConfig, model_dir: Path) -> None:
        self.config = config
        self.model_dir = model_dir
        args = LlamaArgs.from_model_dir(model_dir)
        self.vocab_size = args.vocab_size
        self.max_model_len = config.resolved_max_model_len(args.max_position_embeddings)
        self.tokenizer: Tokenizer = HFTokenizer(model_dir, max_prompt_tokens=self.max_model_len)
        self._process: BaseProcess | None = None
        self._commands: Connection | None = None  # we write, the core reads
        self._outputs: Connection | None = None  # the core writes, we read
        self._send_queue: SimpleQueue[tuple[Any, ...] | None] = SimpleQueue()
        self._sender: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[EngineStats] | None = None
        self._streams: dict[str, asyncio.Queue[TokenDelta]] = {}
        self._stats = EngineStats()
        # stopped → starting → serving → died (the core exited on its own) or stopped (by stop())
        self._state: Literal["stopped", "starting", "serving", "died"] = "stopped"

    @property
    def core_died(self) -> bool:
        """The core exited while serving, not because we stopped it."""
        return self._state == "died"

    async def start(self) -> None:
        """Spawn the core, wait until it has loaded the model; EngineCoreError if it cannot."""
        self._loop = asyncio.get_running_loop()
        self._state = "starting"
        ctx = multiprocessing.get_context("spawn")
        commands_r, self._commands = ctx.Pipe(duplex=False)
        self._outputs, outputs_w = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=engine_core_main, name="dpserve-engine-core", daemon=True,
            args=(self.config, self.model_dir, self.tokenizer.eos_token_ids, commands_r, outputs_w,
                  logging.getLogger().getEffectiveLevel(), os.getpid()))
        self._process.start()
        commands_r.close()  # the child holds these ends now; closing ours makes its death an EOF here
        outputs_w.close()
        self._ready = self._loop.create_future()
        self._loop.add_reader(self._outputs.fileno(), self._on_outputs)
        self._sender = threading.Thread(target=self._send_loop, name="dpserve-engine-sender", daemon=True)
        self._sender.start()
        self._stats = await self._ready

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if self._state != "died":  # "died" stays: the command's exit status reports it
            self._state = "stopped"  # from here on, the core's exit is expected
        self._send_queue.put(("stop",))
        self._send_queue.put(None)  # ends the sender thread after "stop" is written
        await asyncio.to_thread(process.join, _STOP_GRACE_S)
        if self._sender is not None:
            await asyncio.to_thread(self._sender.join, _STOP_GRACE_S)
        if process.is_alive():
            logger.warning("engine core did not stop within %.0f s; killing it", _STOP_GRACE_S)
            process.kill()
            await asyncio.to_thread(process.join, _STOP_GRACE_S)
        self._close_outputs()
        if self._commands is not None:
            self._commands.close()
        self._fail_all()

    def stats(self) -> EngineStats:
        return self._stats  # the snapshot the core sent with its last message

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        if self._state != "serving":
            raise EngineCoreError("the engine core is not running")
        check_prompt(request.prompt_token_ids, self.max_model_len, self.vocab_size)  # ValueError → 400
        if request.request_id in self._streams:
            raise ValueError(f"request id {request.request_id!r} is already running")
        stream: asyncio.Queue[TokenDelta] = asyncio.Queue()
        self._streams[request.request_id] = stream
        self._send_queue.put(("add", request.request_id, list(request.prompt_token_ids), request.sampling))
        finished = False
        try:
            while True:
                delta = await stream.get()
                finished = delta.finish_reason is not None
                yield delta
                if finished:
                    return
        finally:
            self._streams.pop(request.request_id, None)
            if not finished:  # closed early or cancelled: the core frees the blocks before its next step
                self._send_queue.put(("abort", request.request_id))

    # -- sender thread ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        commands = self._commands
        assert commands is not None
        while (command := self._send_queue.get()) is not None:
            try:
                commands.send(command)
            except OSError:  # the core is gone; _on_outputs sees the EOF and fails the streams
                return

    # -- event loop side ----------------------------------------------------------------------
    def _on_outputs(self) -> None:
        """Read every message the core has written so far and deliver it."""
        outputs = self._outputs
        assert outputs is not None
        try:
            while outputs.poll():
                self._handle(outputs.recv())
        except (EOFError, OSError):
            self._on_core_exit()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "step":
            self._stats = message[2]
            for rid, token_ids, finish_reason, num_prompt, num_cached, error in message[1]:
                stream = self._streams.get(rid)
                if stream is not None:  # None: the consumer already left and its abort is queued
                    stream.put_nowait(TokenDelta(token_ids, finish_reason, num_prompt, num_cached, error))
        elif kind == "stats":
            self._stats = message[1]
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            self._state = "serving"
            self._ready.set_result(message[1])
        elif kind == "failed" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(EngineCoreError(f"the engine core failed to start: {message[1]}"))

    def _on_core_exit(self) -> None:
        self._close_outputs()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(EngineCoreError("the engine core exited while starting"))
        elif self._state == "serving":  # died on its own: take the replica down with it, as vLLM's
            # API server does, so its supervisor restarts it rather than routing to a zombie
            self._state = "died"
            logger.error("the engine core process died (exit code %s); failing open requests and "
                         "shutting down", self._process.exitcode if self._process else None)
            os.kill(os.getpid(), signal.SIGTERM)
        self._fail_all()

    def _close_outputs(self) -> None:
        outputs, self._outputs = self._outputs, None
        if outputs is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(outputs.fileno())
        with contextlib.suppress(OSError):
            outputs.close()

    def _fail_all(self) -> None:
        error = EngineError("the engine core stopped; retry on another replica", engine_down=True)
        for stream in self._streams.values():
            stream.put_nowait(TokenDelta([], finish_reason="abort", error=error))
