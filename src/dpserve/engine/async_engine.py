"""AsyncEngine: the EngineClient of the built-in engine — an engine thread off the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from dpserve.engine.config import EngineConfig
from dpserve.engine.llm_engine import LLMEngine
from dpserve.engine.models.llama import LlamaArgs
from dpserve.engine.tokenizer import HFTokenizer
from dpserve.serving.engine_client import EngineStats, GenerateRequest, TokenDelta, Tokenizer

logger = logging.getLogger(__name__)

_Command = tuple[str, GenerateRequest | str | None]


def default_num_threads() -> int:
    """All usable CPUs but one. Why: the event loop and the client need a core; when they preempt
    one of the model's OpenMP threads, every parallel region waits for it (vLLM's CPU backend
    reserves a core for its frontend for the same reason)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


class AsyncEngine:
    """Runs LLMEngine.step() in a dedicated thread; requests and aborts arrive through a queue
    processed between steps, and each step's deltas reach asyncio in one call_soon_threadsafe."""

    def __init__(self, config: EngineConfig, model_dir: Path) -> None:
        self.config = config
        self.model_dir = model_dir
        self.tokenizer: Tokenizer = HFTokenizer(model_dir)
        self.engine: LLMEngine | None = None
        self.max_model_len = config.resolved_max_model_len(
            LlamaArgs.from_model_dir(model_dir).max_position_embeddings)  # known before start()
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, asyncio.Queue[TokenDelta]] = {}
        self._stats = EngineStats()
        self._crashed = False

    async def start(self) -> None:
        self._set_num_threads()
        self._loop = asyncio.get_running_loop()
        self.engine = await asyncio.to_thread(LLMEngine, self.config, self.model_dir,
                                              self.tokenizer.eos_token_ids)
        self._stats = self.engine.stats()
        self._thread = threading.Thread(target=self._run, name="dpserve-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._submit(("stop", None))
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        for rid, stream in list(self._streams.items()):
            stream.put_nowait(TokenDelta([], finish_reason="abort"))
            self._streams.pop(rid, None)

    def stats(self) -> EngineStats:
        return self._stats  # a snapshot replaced (never mutated) by the engine thread

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        if self.engine is None or self._thread is None or self._crashed:
            raise RuntimeError("engine not started" if not self._crashed else "engine thread crashed")
        self.engine.check_prompt(request.prompt_token_ids)  # ValueError here, not in the engine thread
        if request.request_id in self._streams:
            raise ValueError(f"request id {request.request_id!r} is already running")
        stream: asyncio.Queue[TokenDelta] = asyncio.Queue()
        self._streams[request.request_id] = stream
        self._submit(("add", request))
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
            if not finished:  # closed early or cancelled: free the blocks before the next step
                self._submit(("abort", request.request_id))

    # -- engine thread ------------------------------------------------------------------------
    def _submit(self, command: _Command) -> None:
        self._commands.put(command)
        self._wakeup.set()

    def _set_num_threads(self) -> None:
        """OpenMP thread counts are per calling thread: set it where the model runs too."""
        import torch

        torch.set_num_threads(self.config.num_threads or default_num_threads())

    def _run(self) -> None:
        engine = self.engine
        assert engine is not None
        self._set_num_threads()
        try:
            while self._drain_commands(engine):
                if not engine.has_work:
                    self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                outputs = engine.step()
                self._stats = engine.stats()
                if outputs:
                    self._call_soon(self._deliver, outputs)
        except Exception:  # a bug in the engine: fail every open stream rather than hang them
            logger.exception("engine thread crashed")
            self._crashed = True
            self._call_soon(self._fail_all)

    def _drain_commands(self, engine: LLMEngine) -> bool:
        """Apply queued adds/aborts; False once asked to stop."""
        changed = False
        while True:
            try:
                kind, payload = self._commands.get_nowait()
            except queue.Empty:
                break
            changed = True
            if kind == "stop":
                return False
            if kind == "abort" and isinstance(payload, str):
                engine.abort_request(payload)
            elif kind == "add" and isinstance(payload, GenerateRequest):
                self._add(engine, payload)
        if changed:
            self._stats = engine.stats()
        return True

    def _add(self, engine: LLMEngine, request: GenerateRequest) -> None:
        try:
            engine.add_request(request.request_id, request.prompt_token_ids, request.sampling)
        except ValueError:
            logger.exception("request %s rejected by the engine", request.request_id)
            self._call_soon(self._deliver, [(request.request_id, TokenDelta([], finish_reason="abort"))])

    def _call_soon(self, callback: object, *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)  # type: ignore[arg-type]

    # -- event loop side ----------------------------------------------------------------------
    def _deliver(self, outputs: list[tuple[str, TokenDelta]]) -> None:
        for rid, delta in outputs:
            stream = self._streams.get(rid)
            if stream is not None:  # None: the consumer already left and its abort is queued
                stream.put_nowait(delta)

    def _fail_all(self) -> None:
        for stream in self._streams.values():
            stream.put_nowait(TokenDelta([], finish_reason="abort"))
