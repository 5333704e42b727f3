"""dpserve top: sorting (natural names, missing values last, both orders) and the rendered frame."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from dpserve.top.rows import KEY_BINDINGS, SORT_KEYS, next_sort_key, sorted_replicas
from dpserve.top.table import frame


def _row(label: str, **fields: Any) -> dict[str, Any]:
    base = {"label": label, "healthy": True, "removed": False, "draining": False, "circuit_state": "closed",
            "in_flight": 0, "running": 0.0, "waiting": 0.0, "generation_tokens_per_s": None,
            "kv_cache_usage": 0.0, "prefix_cache_hit_rate": None, "ttft_p50_s": None, "ttft_p99_s": None,
            "errors": 0, "retries": 0, "migrations": 0, "restarts": None, "state": "ok"}
    return {**base, **fields}


def test_names_sort_naturally_and_missing_values_go_last_in_both_orders() -> None:
    rows = [_row("r10", generation_tokens_per_s=5.0), _row("r2"), _row("r1", generation_tokens_per_s=9.0)]
    assert [r["label"] for r in sorted_replicas(rows, "name", False)] == ["r1", "r2", "r10"]
    assert [r["label"] for r in sorted_replicas(rows, "name", True)] == ["r10", "r2", "r1"]
    assert [r["label"] for r in sorted_replicas(rows, "tokens", False)] == ["r10", "r1", "r2"]
    assert [r["label"] for r in sorted_replicas(rows, "tokens", True)] == ["r1", "r10", "r2"]


def test_every_sort_key_has_a_binding_and_s_cycles_through_all() -> None:
    assert sorted(KEY_BINDINGS.values()) == sorted(SORT_KEYS)
    seen, key = [], SORT_KEYS[0]
    for _ in SORT_KEYS:
        seen.append(key)
        key = next_sort_key(key)
    assert sorted(seen) == sorted(SORT_KEYS) and key == SORT_KEYS[0]


def test_frame_shows_the_fleet_the_verdict_and_one_line_per_replica() -> None:
    doc = {"policy": "cache_aware",
           "fleet": {"healthy": 1, "replicas": 2, "request_rate": 12.5, "generation_tokens_per_s": 900.0,
                     "queue_depth": 3, "rejected_429_per_s": 0.0},
           "diagnosis": {"state": "replica_bound", "bottleneck": "r0",
                         "message": "r0 is at max-num-seqs (16) with 14 waiting"},
           "replicas": [_row("r0", running=16.0, waiting=14.0, kv_cache_usage=0.4, ttft_p99_s=0.25),
                        _row("r1", healthy=False, state="down")]}
    console = Console(width=160, record=True, color_system=None)
    console.print(frame(doc, "name", False, "gateway answered 503", "http://127.0.0.1:8000"))
    text = console.export_text()
    assert "healthy 1/2" in text and "req/s 12.5" in text and "gateway answered 503" in text
    assert "r0 is at max-num-seqs (16) with 14 waiting" in text
    r0 = next(line for line in text.splitlines() if line.startswith("r0"))
    assert r0.split()[:6] == ["r0", "up", "closed", "0", "16", "14"] and "40%" in r0 and "250" in r0
    assert next(line for line in text.splitlines() if line.startswith("r1")).split()[1] == "down"
    assert "sort: name (ascending)" in text
