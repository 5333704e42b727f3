"""GET /dashboard/data's document: its schema (every field, its type), `since`/`series`, bad parameters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dpserve.errors import HTTPError
from dpserve.gateway.dashboard.view import Dashboard
from tests.unit.gateway.dashboard.fleet import Fleet, make_fleet

NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))
OPT_INT = (int, type(None))

# The documented schema (docs/architecture.md, "gateway/dashboard"): field → type(s) or nested schema.
REPLICA = {
    "label": str, "id": OPT_STR, "name": OPT_STR, "url": OPT_STR, "removed": bool, "healthy": bool,
    "circuit_state": OPT_STR, "draining": bool, "weight": OPT_NUM, "in_flight": int,
    "running": OPT_NUM, "waiting": OPT_NUM, "kv_cache_usage": OPT_NUM, "restarts": OPT_INT,
    "generation_tokens_per_s": OPT_NUM, "preemptions_per_s": OPT_NUM, "prefix_cache_hit_rate": OPT_NUM,
    "ttft_p50_s": OPT_NUM, "ttft_p99_s": OPT_NUM, "max_num_seqs": OPT_INT, "requests": int,
    "errors": int,
    "retries": int, "migrations": int, "state": OPT_STR, "finding": OPT_STR}
FLEET = {
    "replicas": int, "healthy": int, "queue_depth": int, "in_flight": int, "request_rate": OPT_NUM,
    "generation_tokens_per_s": OPT_NUM, "rejected_429_per_s": OPT_NUM, "rejected_429_total": int,
    "decisions": [{"reason": str, "per_s": NUM, "total": int}], "rejected": {str: int}}
TENANT = {"tenant": str, "requests_last_minute": int, "tokens_last_minute": int, "in_flight": int,
          "limits": {"requests_per_minute": OPT_INT, "tokens_per_minute": OPT_INT,
                     "max_concurrency": OPT_INT}}
SERIES = {"first_seq": int, "times": [NUM], "fleet": {str: [OPT_NUM]}, "replicas": {str: {str: [OPT_NUM]}}}
DOCUMENT = {
    "schema": int, "seq": int, "time": OPT_NUM, "interval_s": NUM, "history_s": NUM, "next_sample_in_s": NUM,
    "policy": str, "fleet": FLEET, "replicas": [REPLICA], "tenants": [TENANT],
    "diagnosis": {"state": str, "bottleneck": OPT_STR, "message": str, "evidence": {str: NUM}},
    "series": SERIES}


def check(value: Any, schema: Any, where: str = "$") -> None:
    """`value` matches `schema`: a type/tuple, [item schema], {str: value schema} or {field: schema}."""
    if isinstance(schema, list):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, dict) and list(schema) == [str]:
        assert isinstance(value, dict), where
        for key, item in value.items():
            assert isinstance(key, str), where
            check(item, schema[str], f"{where}.{key}")
    elif isinstance(schema, dict):
        assert isinstance(value, dict) and set(value) == set(schema), (where, set(value) ^ set(schema))
        for key, sub in schema.items():
            check(value[key], sub, f"{where}.{key}")
    else:
        assert isinstance(value, schema) and not (schema is int and isinstance(value, bool)), (where, value)


def _loaded_fleet() -> tuple[Fleet, Dashboard]:
    fleet = make_fleet()
    workers = [fleet.add(f"r{i}") for i in range(3)]
    dashboard = Dashboard(fleet.registry, fleet.metrics, fleet.admission, clock=fleet.clock)
    dashboard.sampler = fleet.sampler
    for second in range(5):
        for w in workers:
            fleet.serve(w, 4 + second)
        fleet.admission.metrics.admitted["default"] += 12
        fleet.second()
    return fleet, dashboard


def test_the_document_matches_the_schema_and_round_trips_as_json() -> None:
    _, dashboard = _loaded_fleet()
    doc = orjson.loads(orjson.dumps(dashboard.data({})))
    check(doc, DOCUMENT)
    assert doc["seq"] == 5 and [r["label"] for r in doc["replicas"]] == ["r0", "r1", "r2"]
    assert doc["series"]["first_seq"] == 1 and len(doc["series"]["times"]) == 5
    assert set(doc["series"]["replicas"]) == {"r0", "r1", "r2"}
    assert doc["fleet"]["decisions"][0]["reason"] == "cache_hit"


def test_since_sends_only_newer_samples_and_series_0_none() -> None:
    _, dashboard = _loaded_fleet()
    newer = dashboard.data({"since": "4"})["series"]
    assert (newer["first_seq"], len(newer["times"])) == (5, 1)
    assert dashboard.data({"since": "5"})["series"]["times"] == []
    assert "series" not in dashboard.data({"series": "0"})


def test_a_worker_added_after_the_last_sample_is_listed_with_live_fields_only() -> None:
    fleet, dashboard = _loaded_fleet()
    fleet.add("r3")
    doc = dashboard.data({"series": "0"})
    row = doc["replicas"][-1]
    assert (row["label"], row["healthy"]) == ("r3", True)
    assert (row["generation_tokens_per_s"], row["finding"]) == (None, None)
    check(row, REPLICA)


@pytest.mark.parametrize("query", [{"since": "-1"}, {"since": "abc"}, {"since": "1e3"}, {"since": "²"},
                                   {"since": "9" * 40}, {"series": "yes"}])
def test_bad_parameters_are_a_400_naming_them(query: dict[str, str]) -> None:
    _, dashboard = _loaded_fleet()
    with pytest.raises(HTTPError) as info:
        dashboard.data(query)
    assert info.value.status == 400 and info.value.param == next(iter(query))


def test_before_the_first_sample_the_document_still_has_every_field() -> None:
    fleet = make_fleet()
    fleet.add("r0")
    dashboard = Dashboard(fleet.registry, fleet.metrics, fleet.admission, clock=fleet.clock)
    doc = orjson.loads(orjson.dumps(dashboard.data({})))
    assert doc["seq"] == 0 and doc["diagnosis"] is None and doc["replicas"][0]["label"] == "r0"
    check({k: v for k, v in doc.items() if k != "diagnosis"},
          {k: v for k, v in DOCUMENT.items() if k != "diagnosis"})
