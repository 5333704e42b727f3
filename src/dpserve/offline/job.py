"""One batch run end to end: replicas up, results written, progress shown, summary printed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import BinaryIO, TextIO

import aiohttp
import orjson

from dpserve.config import ConfigError
from dpserve.offline import client
from dpserve.offline.assignment import Assigner, FifoAssigner, WorkItem
from dpserve.offline.config import BatchConfig
from dpserve.offline.dispatcher import Dispatcher, DispatchSettings, NoReplicaError
from dpserve.offline.health import HealthProber
from dpserve.offline.plan import JobPlan, plan_job
from dpserve.offline.prefix_groups import PrefixGroupAssigner
from dpserve.offline.progress import ProgressReporter, ProgressState
from dpserve.offline.reader import load_request
from dpserve.offline.records import BatchRequest, invalid_line
from dpserve.offline.replicas import ReplicaPool, ReplicaSource, StaticReplicas
from dpserve.offline.summary import build_summary, format_summary
from dpserve.offline.writer import OrderedWriter, ResultFile, ResultSink, UnorderedWriter

logger = logging.getLogger(__name__)


def run_batch(config: BatchConfig, stream: TextIO = sys.stderr) -> int:
    """0 when every request has its line in OUT; 1 when the job had to stop (resumable)."""
    plan = plan_job(config)
    from dpserve.http_server import run_on_uvloop

    return run_on_uvloop(_main(config, plan, stream))


def replica_source(config: BatchConfig) -> ReplicaSource:
    if config.worker_urls:
        return StaticReplicas(config.worker_urls)
    from dpserve.offline.launch import LaunchedReplicas

    return LaunchedReplicas(config)


async def _main(config: BatchConfig, plan: JobPlan, stream: TextIO) -> int:
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    # Ctrl-C and SIGTERM unwind the job, so OUT is fsynced and co-launched replicas are stopped.
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop, sig)
    try:
        return await run_job(config, plan, stream)
    except asyncio.CancelledError:
        if not received:
            raise
        logger.warning("stopped by %s; results so far are in %s, continue with --resume",
                       received[0].name, config.output)
        return 128 + received[0]


async def run_job(config: BatchConfig, plan: JobPlan, stream: TextIO) -> int:
    """The job inside an existing event loop (tests call this directly)."""
    source = replica_source(config)
    try:
        urls = await source.start()
        if not urls:
            raise ConfigError("no replicas: give --worker-urls or --dp-size >= 1")
        pool = ReplicaPool(urls, time.monotonic)
        source.bind(pool)
        async with _session() as session:
            return await _run_job(config, plan, pool, session, stream)
    except NoReplicaError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        await source.stop()


@contextlib.asynccontextmanager
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    # One pooled session for the whole job; no per-host cap beyond our own in-flight limit.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def _make_assigner(config: BatchConfig, plan: JobPlan) -> Assigner:
    return PrefixGroupAssigner(plan.pending) if config.group_by_prefix else FifoAssigner(plan.pending)


def _make_sink(config: BatchConfig, plan: JobPlan, out: ResultFile) -> ResultSink:
    if config.preserve_order:
        return OrderedWriter(out, plan.output_order, config.order_window)
    return UnorderedWriter(out)


async def _run_job(config: BatchConfig, plan: JobPlan, pool: ReplicaPool, session: aiohttp.ClientSession,
                   stream: TextIO) -> int:
    state = ProgressState(total=len(plan.pending), started_at=time.monotonic())
    try:
        with contextlib.closing(ResultFile(config.output, config.fsync_interval_s)) as out, \
                open(config.input, "rb") as input_file:
            sink = _make_sink(config, plan, out)
            for bad in plan.invalid:
                sink.submit(bad.line_no, invalid_line(bad.line_no, bad.custom_id, bad.message))
            dispatcher = _make_dispatcher(config, plan, pool, sink, state, input_file, session)
            prober = HealthProber(pool, lambda url: client.is_healthy(session, url),
                                  config.down_probe_interval_s, dispatcher.notify)
            await _drive(dispatcher, prober, _reporter(config, state, stream), state)
    finally:  # also when stopped early: what was done is worth knowing
        _print_summary(config, plan, pool, state, stream)
    return 0


def _make_dispatcher(config: BatchConfig, plan: JobPlan, pool: ReplicaPool, sink: ResultSink,
                     state: ProgressState, input_file: BinaryIO,
                     session: aiohttp.ClientSession) -> Dispatcher:
    def load(item: WorkItem) -> BatchRequest:
        return load_request(input_file, item.ref)

    async def send(url: str, request: BatchRequest) -> client.Outcome:
        return await client.send(session, url, request, config.request_timeout_s)

    settings = DispatchSettings(config.max_inflight_per_replica, config.max_retries,
                                config.no_replica_timeout_s)
    return Dispatcher(pool, _make_assigner(config, plan), sink, load, send, state, settings)


async def _drive(dispatcher: Dispatcher, prober: HealthProber, reporter: ProgressReporter | None,
                 state: ProgressState) -> None:
    """Run the dispatcher with the prober and progress reporter alongside."""
    await prober.check_all_once()
    prober.start()
    if reporter:
        reporter.start()
    try:
        await dispatcher.run()
    finally:
        state.finished_at = time.monotonic()
        await prober.stop()
        if reporter:
            await reporter.stop()


def _reporter(config: BatchConfig, state: ProgressState, stream: TextIO) -> ProgressReporter | None:
    mode = config.progress
    if mode == "none":
        return None
    as_bar = mode == "bar" or (mode == "auto" and stream.isatty())
    interval = 0.25 if as_bar else config.progress_interval_s
    return ProgressReporter(state, stream, as_bar=as_bar, interval_s=interval)


def _print_summary(config: BatchConfig, plan: JobPlan, pool: ReplicaPool, state: ProgressState,
                   stream: TextIO) -> None:
    summary = build_summary(state, pool.replicas, input_requests=plan.input_requests,
                            invalid_lines=len(plan.invalid), skipped=plan.skipped, now=time.monotonic())
    stream.write(format_summary(summary) + "\n")
    stream.flush()
    if config.summary_json is not None:
        config.summary_json.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
