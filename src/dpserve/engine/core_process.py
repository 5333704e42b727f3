"""The engine core process: LLMEngine stepping in a process of its own, fed and drained over pipes.

Why a process and not a thread: the HTTP side (JSON, SSE, detokenizing) and the engine loop would
otherwise share one GIL, and every millisecond the event loop holds it stalls the next step
(measured: ~20 ms per token lost at c=1 with a thread). vLLM's V1 engine core is split out the same
way. The process is started with `spawn` (forking a process that may hold OpenMP/tokenizer threads
is unsafe) and exits when the parent closes its end of the command pipe, dies, or says "stop".

Wire format (pickled tuples over two one-way pipes):
  parent → core: ("add", request_id, prompt_token_ids, SamplingParams) | ("abort", request_id) | ("stop",)
  core → parent: ("ready", EngineStats) | ("failed", message)
                 | ("step", [(request_id, new_token_ids, finish_reason, num_prompt, num_cached, error)],
                    EngineStats)   (error: an EngineError when the engine failed that request, else None)
                 | ("stats", EngineStats)

What one request sends can fail that request only: a command the engine refuses or that raises,
or a token that cannot be sampled, ends that request with an EngineError and the loop goes on.
Only an exception out of a whole step (the model's forward pass) ends the process, and the HTTP
side then exits for its supervisor to restart it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dpserve.engine.config import EngineConfig
from dpserve.log import setup_logging
from dpserve.parent_death import die_with_parent, load_libc
from dpserve.serving.engine_client import EngineError, SamplingParams

logger = logging.getLogger(__name__)

def default_num_threads() -> int:
    """Every CPU this process may use. The HTTP side lives in another process and needs little CPU
    per token; measured on 2 cores, 2 model threads beat 1 by ~35% at c=1 and ~50% at c=16 served
    (docs/benchmarks.md), unlike the in-process thread design this replaced, which had to leave
    the event loop a core of its own."""
    return max(1, len(os.sched_getaffinity(0)))


def engine_core_main(config: EngineConfig, model_dir: Path, eos_token_ids: Sequence[int],
                     commands: Connection, outputs: Connection, log_level: int, parent_pid: int) -> None:
    """Entry point of the spawned process: build the engine, say "ready", then serve commands."""
    # SIGKILL if the parent dies without closing the pipes cleanly (belt and braces: the pipe's EOF
    # already ends the loop, but not while a long prefill step runs)
    die_with_parent(load_libc(), signal.SIGKILL, parent_pid)
    # Ctrl-C and the launcher's SIGTERM reach the whole process group; the HTTP process decides
    # when we stop (after draining), so neither may kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(logging.getLevelName(log_level))
    import torch

    torch.set_num_threads(config.num_threads or default_num_threads())
    from dpserve.engine.llm_engine import LLMEngine

    try:
        engine = LLMEngine(config, model_dir, eos_token_ids)
    except Exception as exc:  # reported to the parent, which fails its startup with this text
        logger.exception("engine core failed to start")
        with contextlib.suppress(OSError):
            outputs.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    try:
        outputs.send(("ready", engine.stats()))
        EngineCoreLoop(engine, commands, outputs).run()
    finally:  # also after a failed step: the gateways get the events up to it
        engine.close()


class EngineCoreLoop:
    """Apply queued commands, step, send the step's deltas; block on the pipe only when idle."""

    def __init__(self, engine: Any, commands: Connection, outputs: Connection) -> None:
        self.engine = engine  # an LLMEngine (Any: this module must not import torch at load time)
        self.commands = commands
        self.outputs = outputs

    def run(self) -> None:
        """Serve until "stop", or until the parent closes its end of either pipe."""
        with contextlib.suppress(EOFError, OSError):  # the parent went away: nothing left to serve
            self._serve()

    def _serve(self) -> None:
        engine = self.engine
        while True:
            if not engine.has_work and not self._apply(self.commands.recv()):
                return
            changed = False
            while self.commands.poll():  # everything that arrived during the last step
                if not self._apply(self.commands.recv()):
                    return
                changed = True
            if not engine.has_work:
                if changed:
                    self.outputs.send(("stats", engine.stats()))
                continue
            deltas = [(rid, d.new_token_ids, d.finish_reason, d.num_prompt_tokens, d.num_cached_tokens,
                       d.error) for rid, d in engine.step()]
            self.outputs.send(("step", deltas, engine.stats()))

    def _apply(self, command: tuple[Any, ...]) -> bool:
        """Carry out one command; False once asked to stop."""
        kind = command[0]
        if kind == "add":
            self._add(command[1], command[2], command[3])
        elif kind == "abort":
            self.engine.abort_request(command[1])
        elif kind == "stop":
            return False
        return True

    def _add(self, request_id: str, prompt_token_ids: list[int], sampling: SamplingParams) -> None:
        try:
            self.engine.add_request(request_id, prompt_token_ids, sampling)
        except Exception as exc:  # whatever one request brings fails that request, not the engine
            logger.warning("request %s refused by the engine: %s: %s", request_id, type(exc).__name__, exc)
            error = EngineError(f"the engine refused the request: {exc}")
            self.outputs.send(("step", [(request_id, [], "abort", 0, 0, error)], self.engine.stats()))
