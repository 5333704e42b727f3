"""`dpserve bench`: run a benchmark against --url, print the table, write --output-json."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from dpserve.bench.config import BenchConfig
from dpserve.config import CommonOptions

CONFIG_CLASS = BenchConfig
EXIT_INTERRUPTED = 130


async def _main(config: BenchConfig) -> dict[str, Any]:
    from dpserve.bench.benchmark import run_benchmark

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # First Ctrl-C: stop sending, cancel in-flight requests, still report what finished.
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        return await run_benchmark(config, stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def run(config: BenchConfig, common: CommonOptions) -> int:
    import orjson

    from dpserve.bench.benchmark import BenchError
    from dpserve.bench.report import format_table
    from dpserve.http_server import run_on_uvloop

    try:
        report = run_on_uvloop(_main(config))
    except BenchError as exc:
        print(f"dpserve bench: error: {exc}", file=sys.stderr)
        return 1
    print(format_table(report))
    if config.output_json is not None:
        config.output_json.parent.mkdir(parents=True, exist_ok=True)
        config.output_json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if report["interrupted"]:
        return EXIT_INTERRUPTED
    return 0 if report["completed"] else 1
