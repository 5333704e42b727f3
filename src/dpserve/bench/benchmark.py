"""One benchmark run end to end: build the workload, warm up, measure, scrape caches, report."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import orjson

from dpserve.bench.arrivals import arrival_offsets
from dpserve.bench.config import BenchConfig
from dpserve.bench.conversation import Conversation, RequestResult
from dpserve.bench.payload import RequestOptions
from dpserve.bench.progress import Progress
from dpserve.bench.replica_counters import counters_report, scrape_all
from dpserve.bench.report import SLO, build_report
from dpserve.bench.runner import Runner
from dpserve.bench.text import HFTokenizer, PromptText
from dpserve.bench.workloads import get_workload
from dpserve.config import ConfigError
from dpserve.http_names import MODELS_PATH

MODEL_DISCOVERY_TIMEOUT_S = 30.0
# Independent streams per purpose, so e.g. changing --warmup never changes the measured prompts.
_PROMPT_STREAM, _ARRIVAL_STREAM, _WARMUP_STREAM = 0, 1, 2


class BenchError(RuntimeError):
    """The run cannot start (server unreachable, no model); the message says why."""


def make_text(config: BenchConfig) -> PromptText:
    try:
        return PromptText(HFTokenizer(config.tokenizer) if config.tokenizer else None)
    except (OSError, ValueError) as exc:  # missing dir/file, or not a tokenizer.json
        raise ConfigError(f"--tokenizer {config.tokenizer}: {exc}") from exc


def build_conversations(config: BenchConfig, text: PromptText) -> list[Conversation]:
    """The measured workload; identical for identical config (seed included)."""
    rng = np.random.default_rng([config.seed, _PROMPT_STREAM])
    return get_workload(config.workload).build(config, text, rng)


def build_arrivals(config: BenchConfig, count: int) -> list[float]:
    rng = np.random.default_rng([config.seed, _ARRIVAL_STREAM])
    return arrival_offsets(count, config.request_rate, config.burstiness, rng)


def build_warmup(config: BenchConfig, text: PromptText) -> list[Conversation]:
    """--warmup random prompts of the run's lengths, unrelated to its prompts (so warm-up does
    not pre-fill the prefix cache the run is measuring)."""
    if config.warmup == 0:
        return []
    warm = dataclasses.replace(config, workload="random", num_prompts=config.warmup)
    return get_workload("random").build(warm, text, np.random.default_rng([config.seed, _WARMUP_STREAM]))


async def discover_model(http: aiohttp.ClientSession, base_url: str) -> str:
    """The first model id from GET /v1/models."""
    url = base_url.rstrip("/") + MODELS_PATH
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=MODEL_DISCOVERY_TIMEOUT_S)) as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200:
                raise BenchError(f"cannot list models at {url}: HTTP {resp.status}: {text[:200]}; "
                                 "pass --model")
            body = orjson.loads(text)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise BenchError(f"cannot list models at {url}: {exc}") from exc
    models = body.get("data") if isinstance(body, dict) else None
    first = models[0] if isinstance(models, list) and models else None
    if not isinstance(first, dict) or "id" not in first:
        raise BenchError(f"{url} lists no models; pass --model")
    return str(first["id"])


def config_echo(config: BenchConfig, model: str, num_requests: int) -> dict[str, Any]:
    keys = ("url", "endpoint", "workload", "seed", "request_rate", "burstiness", "stream", "ignore_eos")
    return {**{k: getattr(config, k) for k in keys}, "model": model, "num_requests": num_requests,
            "max_in_flight": config.max_in_flight}


async def run_benchmark(config: BenchConfig, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run the benchmark; when `stop` is set mid-run, report what finished (`interrupted`: true)."""
    text = make_text(config)
    conversations = build_conversations(config, text)
    arrivals = build_arrivals(config, len(conversations))
    num_requests = sum(len(c.turns) for c in conversations)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)  # in-flight is capped by the runner
    async with aiohttp.ClientSession(connector=connector) as http:
        model = config.model or await discover_model(http, config.url)
        opts = RequestOptions(endpoint=config.endpoint, model=model, stream=config.stream,
                              ignore_eos=config.ignore_eos, temperature=config.temperature,
                              api_key=config.api_key)

        def runner(on_result: Callable[[RequestResult], None] | None = None) -> Runner:
            return Runner(http, config.url, opts, max_in_flight=config.max_in_flight,
                          timeout_s=config.timeout_s, think_time_s=config.think_time_s,
                          on_result=on_result)

        warmup = build_warmup(config, text)
        if warmup:
            print(f"bench: warming up with {len(warmup)} requests", file=sys.stderr)
            await runner().run(warmup, [0.0] * len(warmup), stop)
        before = await scrape_all(http, config.metrics_urls)
        progress = Progress(num_requests, interval_s=config.progress_interval_s)
        measured = runner(lambda r: progress.update(r.ok))
        finished = await measured.run(conversations, arrivals, stop)
        duration_s = measured.elapsed_s
        progress.close()
        after = await scrape_all(http, config.metrics_urls)
    extra: dict[str, Any] = {"interrupted": not finished, "config": config_echo(config, model, num_requests)}
    if config.metrics_urls:
        extra.update(counters_report(config.metrics_urls, before, after))
    return build_report(measured.results, duration_s, slo=SLO(config.slo_ttft_ms, config.slo_tpot_ms),
                        extra=extra)
