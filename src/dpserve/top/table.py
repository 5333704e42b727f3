"""One frame of `dpserve top`: fleet line, verdict, per-replica table and key help, as rich renderables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from dpserve.top.rows import KEY_BINDINGS, sorted_replicas

_HEALTH_STYLE = {"up": "green", "draining": "yellow", "down": "bold red", "removed": "red"}
_BOUND_STYLE = {"ok": "green", "idle": "green", "down": "bold red"}


def _num(digits: int) -> Callable[[Any], str]:
    return lambda v: "–" if v is None else f"{v:.{digits}f}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def _ms(v: Any) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


def _plain(v: Any) -> str:
    return "–" if v is None else str(v)


# (header, JSON field, formatter); short headers so the table fits 100 columns (TTFT in ms, last minute)
COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("infl", "in_flight", _plain), ("run", "running", _num(0)), ("wait", "waiting", _num(0)),
    ("tok/s", "generation_tokens_per_s", _num(0)), ("KV", "kv_cache_usage", _pct),
    ("hit", "prefix_cache_hit_rate", _pct), ("ttft50", "ttft_p50_s", _ms),
    ("ttft99", "ttft_p99_s", _ms), ("err", "errors", _plain), ("retry", "retries", _plain),
    ("migr", "migrations", _plain), ("rst", "restarts", _plain))


def health(row: dict[str, Any]) -> str:
    if row.get("removed"):
        return "removed"
    if not row.get("healthy"):
        return "down"
    return "draining" if row.get("draining") else "up"


def frame(doc: dict[str, Any] | None, sort: str, reverse: bool, error: str | None,
          url: str) -> RenderableType:
    """The whole screen for one refresh; `doc` is the last good document (None before the first)."""
    parts: list[RenderableType] = [_title(doc, url, error)]
    if doc is not None:
        diagnosis = doc.get("diagnosis") or {}
        style = _BOUND_STYLE.get(diagnosis.get("state", ""), "yellow")
        parts.append(Text(f"bottleneck: {diagnosis.get('message', '–')}", style=style))
        parts.append(_table(doc, sort, reverse))
    keys = " ".join(f"{letter}={key}" for letter, key in KEY_BINDINGS.items())
    order = "descending" if reverse else "ascending"
    parts.append(Text(f"sort: {sort} ({order})   keys: {keys}  s=next sort  o=flip order  q=quit",
                      style="dim"))
    return Group(*parts)


def _title(doc: dict[str, Any] | None, url: str, error: str | None) -> Text:
    title = Text(f"dpserve top · {url}", style="bold")
    if doc is not None:
        f = doc["fleet"]
        rate, tokens = f.get("request_rate"), f.get("generation_tokens_per_s")
        title.append(f"   healthy {f['healthy']}/{f['replicas']}   req/s {_num(1)(rate)}   "
                     f"tok/s {_num(0)(tokens)}   queue {f['queue_depth']}   "
                     f"429/s {_num(1)(f.get('rejected_429_per_s'))}   policy {doc.get('policy', '?')}",
                     style="none")
    if error is not None:
        title.append(f"   ({error})", style="bold red")
    return title


def _table(doc: dict[str, Any], sort: str, reverse: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    table.add_column("replica", no_wrap=True, min_width=7)
    table.add_column("health", no_wrap=True, min_width=7)
    table.add_column("circuit", no_wrap=True, min_width=9)
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    table.add_column("verdict", overflow="ellipsis", no_wrap=True)
    bottleneck = (doc.get("diagnosis") or {}).get("bottleneck")
    for row in sorted_replicas(doc["replicas"], sort, reverse):
        state = health(row)
        label = Text(str(row["label"]), style="bold yellow" if row["label"] == bottleneck else "")
        table.add_row(label, Text(state, style=_HEALTH_STYLE[state]), _plain(row.get("circuit_state")),
                      *(fmt(row.get(field)) for _, field, fmt in COLUMNS), Text(row.get("state") or "–"))
    return table
