"""EngineCoreLoop over real pipes with a scripted engine: commands between steps, deltas out."""

from __future__ import annotations

import threading
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

import pytest

from dpserve.engine.core_process import EngineCoreLoop
from dpserve.serving.engine_client import EngineStats, SamplingParams, TokenDelta


class ScriptedEngine:
    """Each step emits token 7 for every live request; a request finishes after max_tokens."""

    def __init__(self) -> None:
        self.live: dict[str, list[int]] = {}
        self.limits: dict[str, int] = {}
        self.aborted: list[str] = []

    @property
    def has_work(self) -> bool:
        return bool(self.live)

    def add_request(self, request_id: str, prompt: list[int], sampling: SamplingParams) -> None:
        if request_id in self.live:
            raise ValueError("duplicate")
        if sampling.seed == 666:
            raise TypeError("a bug this request's input reaches")
        self.live[request_id] = []
        self.limits[request_id] = sampling.max_tokens

    def abort_request(self, request_id: str) -> bool:
        self.aborted.append(request_id)
        return self.live.pop(request_id, None) is not None

    def step(self) -> list[tuple[str, TokenDelta]]:
        out = []
        for rid, tokens in list(self.live.items()):
            tokens.append(7)
            done = len(tokens) >= self.limits[rid]
            out.append((rid, TokenDelta([7], "length" if done else None, 3, 0)))
            if done:
                del self.live[rid]
        return out

    def stats(self) -> EngineStats:
        return EngineStats(num_running=len(self.live))


@pytest.fixture
def core() -> Any:
    """(engine, commands writer, outputs reader, loop thread) with the loop running."""
    commands_r, commands_w = Pipe(duplex=False)
    outputs_r, outputs_w = Pipe(duplex=False)
    engine = ScriptedEngine()
    thread = threading.Thread(target=EngineCoreLoop(engine, commands_r, outputs_w).run, daemon=True)
    thread.start()
    yield engine, commands_w, outputs_r, thread
    commands_w.send(("stop",))
    thread.join(5)


def _recv(conn: Connection) -> Any:
    assert conn.poll(5), "the core loop sent nothing"
    return conn.recv()


def test_a_request_streams_one_delta_per_step_until_it_finishes(core: Any) -> None:
    _engine, commands, outputs, _ = core
    commands.send(("add", "a", [1, 2, 3], SamplingParams(max_tokens=3)))
    deltas = [_recv(outputs) for _ in range(3)]
    assert [d[0] for d in deltas] == ["step"] * 3
    assert [d[1] for d in deltas] == [[("a", [7], None, 3, 0, None)], [("a", [7], None, 3, 0, None)],
                                      [("a", [7], "length", 3, 0, None)]]
    assert deltas[-1][2].num_running == 0


def test_abort_stops_the_request_and_reports_stats_when_idle(core: Any) -> None:
    engine, commands, outputs, _ = core
    commands.send(("add", "a", [1], SamplingParams(max_tokens=10_000)))
    assert _recv(outputs)[0] == "step"
    commands.send(("abort", "a"))
    while (message := _recv(outputs))[0] == "step":  # steps already under way may still arrive
        pass
    assert message[0] == "stats" and message[1].num_running == 0
    assert engine.aborted == ["a"]


def _failures(seen: list[Any]) -> list[Any]:
    return [d for m in seen if m[0] == "step" for d in m[1] if d[5] is not None]


def _recv_until(conn: Connection, done: Any, limit: int = 200) -> list[Any]:
    """Messages until `done(seen)` holds: how many steps run before a command is applied depends
    on how the two threads are scheduled (a loaded machine runs more steps first)."""
    seen: list[Any] = []
    while not done(seen):
        assert len(seen) < limit, f"not seen after {limit} messages: {seen[-3:]}"
        seen.append(_recv(conn))
    return seen


def test_a_rejected_request_gets_an_abort_delta_with_the_reason(core: Any) -> None:
    engine, commands, outputs, _ = core
    commands.send(("add", "a", [1], SamplingParams(max_tokens=10_000)))
    commands.send(("add", "a", [1], SamplingParams(max_tokens=1)))  # duplicate id: ValueError
    seen = _recv_until(outputs, _failures)
    [(rid, tokens, reason, _, _, error)] = _failures(seen)
    assert (rid, tokens, reason) == ("a", [], "abort")
    assert "duplicate" in error.message and not error.engine_down
    assert "a" in engine.live  # the request already running under that id goes on


def test_any_exception_from_one_request_fails_that_request_only(core: Any) -> None:
    _engine, commands, outputs, thread = core
    commands.send(("add", "bad", [1], SamplingParams(max_tokens=5, seed=666)))
    commands.send(("add", "good", [1], SamplingParams(max_tokens=2)))

    def good_finished(seen: list[Any]) -> list[Any]:
        return [d for m in seen if m[0] == "step" for d in m[1] if d[0] == "good" and d[2] == "length"]

    seen = _recv_until(outputs, lambda seen: _failures(seen) and good_finished(seen))
    [failure] = _failures(seen)
    assert failure[0] == "bad" and "a bug" in failure[5].message
    assert thread.is_alive()


def test_the_loop_ends_when_the_parent_closes_the_pipe() -> None:
    commands_r, commands_w = Pipe(duplex=False)
    _outputs_r, outputs_w = Pipe(duplex=False)
    thread = threading.Thread(target=EngineCoreLoop(ScriptedEngine(), commands_r, outputs_w).run,
                              daemon=True)
    thread.start()
    commands_w.close()
    thread.join(5)
    assert not thread.is_alive()
