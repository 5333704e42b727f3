"""`plan --diagnose URL`: watch a running gateway's replicas over a window and name the bottleneck.

The gateway's `/workers` lists the replicas (with the admin key as a bearer token when one is
given: `/workers` may sit behind it); each replica's `/metrics` is scraped `--scrapes` times over
`--window-s`; dpserve.diagnosis turns the windows into the verdict — the same rules the dashboard
uses, so both say the same words for the same fleet.

What the gateway and replicas answer is read as untrusted: bodies are capped, a malformed answer
is a replica without metrics or an unreadable fleet, never a traceback, and the whole run takes at
most `--window-s` plus three request timeouts. Bad input (URL, admin key) exits 2; a fleet that
cannot be read exits 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import math
import re
import sys
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from dpserve.config import ConfigError
from dpserve.diagnosis import (
    WINDOW_SERIES,
    Diagnosis,
    Finding,
    ReplicaWindow,
    Slo,
    State,
    diagnose_fleet,
    middle_scrape,
    window_from_scrapes,
)
from dpserve.http_body import read_text
from dpserve.planner.config import ADMIN_KEY_ENV, PlanConfig
from dpserve.planner.report import format_table
from dpserve.prometheus_text import Exposition, parse_exposition

REQUEST_TIMEOUT_S = 5.0
EXIT_UNREACHABLE = 1
# Replicas watched: the first 256 of /workers (the output says how many were left out). Each round
# scrapes them all, so time and memory grow with the count; a fleet beyond this is diagnosed in parts.
MAX_WORKERS = 256
# Scrapes in flight at once: each may hold http_body.MAX_BODY_BYTES (8 MiB): ~256 MiB at most.
MAX_CONCURRENT_SCRAPES = 32
MAX_LABEL_CHARS = 64
MAX_REASON_CHARS = 200

Series = list[tuple[float, Exposition]]


class FleetUnreachable(RuntimeError):
    """The gateway did not answer /workers; the message says how."""


def gateway_url(raw: str) -> str:
    """The --diagnose URL checked and normalised (lower-case scheme, no trailing slash): http or
    https in any case, a host, a port in 1..65535, no query or fragment. Anything else is bad input
    (ConfigError: exit 2), not an unreachable fleet."""
    shown = raw if len(raw) <= MAX_REASON_CHARS else raw[:MAX_REASON_CHARS] + "…"
    bad = f"--diagnose must be an http(s)://HOST[:PORT][/PATH] URL, got {shown!r}"
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise ConfigError(bad)
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises for a port that is not a number or is out of 0..65535
    except ValueError as exc:  # also "Invalid IPv6 URL" for an unclosed bracket
        raise ConfigError(f"{bad}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:  # urlsplit lower-cases
        raise ConfigError(bad)
    if parts.query or parts.fragment:
        raise ConfigError(f"{bad}: no query or fragment")
    if parts.username is not None or parts.password is not None:  # they would be echoed in messages
        raise ConfigError("--diagnose must be an http(s)://HOST[:PORT][/PATH] URL with no user:password@; "
                          "the gateway's admin key goes in "
                          f"--admin-key or ${ADMIN_KEY_ENV}")
    if "[" in parts.netloc and not re.fullmatch(r"\[[^\]]*\](:\d+)?", parts.netloc):  # [::1]x
        raise ConfigError(bad)
    host = parts.hostname
    try:  # as the client will: a host the resolver cannot even encode (`a..b`, a 64-char label)
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host.encode("idna")
        except UnicodeError as exc:
            raise ConfigError(f"{bad}: the host {host[:64]!r} is not a valid name") from exc
        if host.replace(".", "").isdigit():  # 999.0.0.1: looks like an address, is none
            raise ConfigError(f"{bad}: {host!r} is not an IP address") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def bearer_key(raw: str | None) -> str | None:
    """The admin key as sent. Surrounding whitespace is dropped: a key read from a file or an env
    file ends with a newline, and the gateway strips the token it receives anyway. A control or
    other non-printable character left inside is bad input (exit 2): it cannot travel in a header,
    and a CR/LF would inject one. The message never shows the key."""
    if raw is None:
        return None
    key = raw.strip()
    if not all(ch.isprintable() for ch in key):
        raise ConfigError(f"the admin key (--admin-key or ${ADMIN_KEY_ENV}) contains a control or "
                          "non-printable character")
    return key or None


def printable(text: str) -> str:
    """`text` with each character a terminal would not print as itself replaced by "?"."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def failure_reason(exc: BaseException, timeout_s: float) -> str:
    """Why a request failed, in one short printable line (str(TimeoutError()) is empty; the text may
    quote a URL the gateway listed)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:.2g} s"
    text = printable(" ".join(str(exc).split())) or type(exc).__name__
    if isinstance(exc, aiohttp.InvalidURL):  # its text is the URL alone
        text = f"invalid URL {text}"
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "…"


async def list_workers(http: aiohttp.ClientSession, url: str, admin_key: str | None) -> list[dict[str, Any]]:
    where = f"{url}/workers"
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        async with http.get(where, headers=headers) as resp:
            status = resp.status
            body = await read_text(resp) if status == 200 else ""
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: BodyTooLarge, a host
        # the resolver refuses
        raise FleetUnreachable(f"cannot read {where}: {failure_reason(exc, REQUEST_TIMEOUT_S)}") from exc
    if status == 401:
        raise ConfigError(f"{where} needs the admin key: pass --admin-key or set {ADMIN_KEY_ENV}")
    if status != 200:
        raise FleetUnreachable(f"{where} answered HTTP {status}")
    try:
        workers = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise FleetUnreachable(f"{where} did not answer JSON") from exc
    if not isinstance(workers, list) or not all(isinstance(w, dict) and "url" in w for w in workers):
        raise FleetUnreachable(f"{where} is not a dpserve gateway's worker list")
    return workers


async def scrape(http: aiohttp.ClientSession, replica_url: str | None, timeout_s: float) -> Exposition | str:
    """One read of a replica's /metrics: the series the diagnosis reads, or why not (never raises:
    the URL came from the gateway, and yarl raises ValueError for some malformed ones)."""
    if replica_url is None:
        return "its /workers entry has no http(s) URL"
    try:
        async with http.get(replica_url.rstrip("/") + "/metrics",
                            timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return f"/metrics answered HTTP {resp.status}"
            text = await read_text(resp)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # BodyTooLarge is a ValueError
        return failure_reason(exc, timeout_s)
    return parse_exposition(text, only=WINDOW_SERIES)


async def scrape_rounds(http: aiohttp.ClientSession, urls: list[str | None], window_s: float,
                        scrapes: int) -> tuple[list[Series], list[str | None]]:
    """`scrapes` rounds spread evenly over `window_s`, each replica once a round; per replica its
    timed scrapes and the first failure's reason. A round waits for its slowest scrape and may start
    late; none starts, and no scrape runs, past window_s + REQUEST_TIMEOUT_S, which bounds the whole."""
    seen: list[Series] = [[] for _ in urls]
    errors: list[str | None] = [None for _ in urls]
    gate = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)
    start = time.monotonic()
    deadline = start + window_s + REQUEST_TIMEOUT_S

    async def one(i: int) -> None:
        async with gate:
            left = min(REQUEST_TIMEOUT_S, deadline - time.monotonic())
            result = await scrape(http, urls[i], left) if left > 0 else "the window ended first"
        if isinstance(result, str):
            errors[i] = errors[i] or result  # the first: a later one may have had a shorter timeout
            return
        series = seen[i]
        if len(series) >= 2:  # the previous last is now a middle scrape: keep its gauges only
            series[-1] = (series[-1][0], middle_scrape(series[-1][1]))
        series.append((time.monotonic(), result))

    for n in range(scrapes):
        await asyncio.sleep(max(0.0, start + n * window_s / max(1, scrapes - 1) - time.monotonic()))
        if time.monotonic() >= deadline:
            break
        await asyncio.gather(*(one(i) for i in range(len(urls))))
    return seen, errors


async def watch(url: str, *, admin_key: str | None, window_s: float,
                scrapes: int) -> tuple[list[ReplicaWindow], int]:
    """Every watched replica's window, and how many listed replicas were left out (past MAX_WORKERS)."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        listed = await list_workers(http, url, admin_key)
        workers = listed[:MAX_WORKERS]
        seen, errors = await scrape_rounds(http, [_replica_url(w) for w in workers], window_s, scrapes)
        final = await list_workers(http, url, admin_key)
    windows = []
    for label, series, error, healthy in zip(replica_labels(workers), seen, errors,
                                             healthy_at_end(workers, final), strict=True):
        window = window_from_scrapes(label, series, healthy=healthy)
        if healthy and not series:
            window = dataclasses.replace(window, metrics_error=error or "not scraped")
        windows.append(window)
    return windows, len(listed) - len(workers)


def _replica_url(worker: dict[str, Any]) -> str | None:
    url = worker.get("url")
    return url if isinstance(url, str) and url[:8].lower().startswith(("http://", "https://")) else None


def replica_labels(workers: list[dict[str, Any]]) -> list[str]:
    """Each replica's name in the output: its id, printable and at most MAX_LABEL_CHARS; an id that
    is missing, empty or repeats gets "#position" so that every row and verdict names one replica."""
    labels: list[str] = []
    for i, w in enumerate(workers):
        raw = w.get("id")
        name = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
        name = printable(name[:MAX_LABEL_CHARS])
        labels.append(name if name and name not in labels else f"{name}#{i}")
    return labels


def healthy_at_end(workers: list[dict[str, Any]], final: list[dict[str, Any]]) -> list[bool]:
    """Is each watched replica healthy in the closing /workers list? Matched by position when the URL
    there is the same (ids need not be unique), else by URL; a replica no longer listed is down."""
    by_url: dict[str, dict[str, Any]] = {}
    for w in final:
        by_url.setdefault(str(w.get("url")), w)
    out = []
    for i, w in enumerate(workers):
        same = final[i] if i < len(final) and final[i].get("url") == w.get("url") else None
        now = same if same is not None else by_url.get(str(w.get("url")))
        out.append(now is not None and now.get("healthy") is True)
    return out


async def diagnose_url(url: str, *, admin_key: str | None, window_s: float, scrapes: int,
                       slo: Slo = Slo()) -> tuple[Diagnosis, list[ReplicaWindow]]:
    """Bad input (the URL, the admin key, a window that is not a finite time) raises ConfigError.
    PlanConfig bounds --window-s too; this keeps any caller from a sleep without end."""
    if not (math.isfinite(window_s) and window_s > 0 and scrapes >= 2):
        raise ConfigError(f"a diagnosis needs a finite window > 0 s and ≥ 2 scrapes, got {window_s} s and "
                          f"{scrapes}")
    windows, left_out = await watch(gateway_url(url), admin_key=bearer_key(admin_key), window_s=window_s,
                                    scrapes=scrapes)
    d = diagnose_fleet(windows, slo)
    if left_out:
        note = (f"{left_out} more replicas listed by /workers were not watched: at most {MAX_WORKERS} are")
        fleet = dataclasses.replace(d.fleet, message=f"{d.fleet.message}; {note}",
                                    evidence={**d.fleet.evidence, "replicas_not_watched": float(left_out)})
        d = dataclasses.replace(d, fleet=fleet)
    return d, windows


_MEASURED = ("running", "waiting", "kv_cache_usage", "preemptions_per_s", "generation_tokens_per_s",
             "tpot_p50_s", "ttft_p99_s", "max_num_seqs")


def diagnosis_json(d: Diagnosis, windows: list[ReplicaWindow]) -> dict[str, Any]:
    """The diagnosis for scripts. A replica whose metrics were not read has null figures, not zeros
    (zeros would read as an idle replica), and no evidence."""
    unread = {w.replica_id for w in windows if w.metrics_error is not None}

    def finding(f: Finding) -> dict[str, Any]:
        return {"state": f.state.value, "replica": f.replica_id, "message": f.message,
                "evidence": {} if f.replica_id in unread and f.state is State.NO_METRICS else f.evidence}

    def window(w: ReplicaWindow) -> dict[str, Any]:
        out = asdict(w)
        return out if w.metrics_error is None else {**out, **dict.fromkeys(_MEASURED)}

    return {"fleet": finding(d.fleet), "bottleneck": d.bottleneck,
            "replicas": [finding(f) for f in d.replicas], "windows": [window(w) for w in windows]}


def diagnosis_text(d: Diagnosis, windows: list[ReplicaWindow]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e3:.0f}"

    def row(w: ReplicaWindow, f: Finding) -> list[str]:
        if w.metrics_error is not None:
            return [w.replica_id, f.state.value, *["-"] * 8]
        return [w.replica_id, f.state.value, f"{w.running:.1f}", f"{w.waiting:.1f}",
                f"{w.kv_cache_usage:.0%}", f"{w.preemptions_per_s:.2f}", f"{w.generation_tokens_per_s:.0f}",
                ms(w.tpot_p50_s), ms(w.ttft_p99_s), "-" if w.max_num_seqs is None else str(w.max_num_seqs)]

    header = ("replica", "state", "running", "waiting", "KV used", "preempt/s", "gen tok/s", "TPOT p50 ms",
              "TTFT p99 ms", "max seqs")
    table = format_table([row(w, f) for w, f in zip(windows, d.replicas, strict=True)], header)
    notes = [f.message for f in d.replicas if f.state is State.NO_METRICS]
    return "\n".join([table, "", *notes, f"fleet: {d.fleet.state.value} — {d.fleet.message}"])


def run_diagnose(config: PlanConfig) -> int:
    """Bad input raises ConfigError (exit 2); an unreadable fleet prints one line and returns 1."""
    import orjson

    assert config.diagnose is not None
    slo = Slo(tpot_s=None if config.tpot_slo_ms is None else config.tpot_slo_ms / 1e3,
              ttft_s=None if config.ttft_slo_ms is None else config.ttft_slo_ms / 1e3)
    try:
        d, windows = asyncio.run(diagnose_url(config.diagnose, admin_key=config.resolved_admin_key,
                                              window_s=config.window_s, scrapes=config.scrapes, slo=slo))
    except FleetUnreachable as exc:
        print(f"dpserve plan: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if sys.stdout is None:  # started with stdout closed: nothing can be shown
        return 0
    if config.as_json:
        sys.stdout.buffer.write(orjson.dumps(diagnosis_json(d, windows), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(diagnosis_text(d, windows))
    sys.stdout.flush()  # here, where a closed pipe or a full disk is reported, not at exit
    return 0
