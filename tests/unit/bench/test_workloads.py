"""Workload generators: determinism under --seed, shapes, ShareGPT parsing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from dpserve.bench.benchmark import build_arrivals, build_conversations, build_warmup
from dpserve.bench.config import BenchConfig
from dpserve.bench.text import PromptText
from dpserve.bench.workloads import WORKLOAD_NAMES, get_workload
from dpserve.config import ConfigError


def _sharegpt_file(tmp_path: Path, n: int = 30, jsonl: bool = False) -> Path:
    records = [{"id": str(i), "conversations": [
        {"from": "human", "value": " ".join(f"q{i}w{j}" for j in range(5 + i))},
        {"from": "gpt", "value": " ".join(f"a{j}" for j in range(4 + i % 7))}]} for i in range(n)]
    records.append({"id": "short", "conversations": [{"from": "human", "value": "hi"},
                                                      {"from": "gpt", "value": "hello there you all"}]})
    records.append({"id": "lonely", "conversations": [{"from": "human", "value": "one two three four"}]})
    path = tmp_path / ("data.jsonl" if jsonl else "data.json")
    path.write_text("\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records))
    return path


def _config(workload: str, tmp_path: Path, **kw: object) -> BenchConfig:
    extra = {"dataset_path": _sharegpt_file(tmp_path)} if workload == "sharegpt" else {}
    base: dict[str, object] = {"num_prompts": 20, "input_len": 12, "output_len": 5, "num_groups": 3,
                               "prompts_per_group": 4, "system_prompt_len": 40, "question_len": 6,
                               "num_sessions": 3, "turns": 2}
    return BenchConfig(workload=workload, **{**base, **extra, **kw})


@pytest.mark.parametrize("name", WORKLOAD_NAMES)
def test_same_seed_same_conversations(name: str, tmp_path: Path) -> None:
    text = PromptText()
    a = build_conversations(_config(name, tmp_path, seed=7), text)
    b = build_conversations(_config(name, tmp_path, seed=7), text)
    c = build_conversations(_config(name, tmp_path, seed=8), text)
    assert a == b
    assert a != c


def test_random_lengths_follow_range_ratio(tmp_path: Path) -> None:
    text = PromptText()
    convs = build_conversations(_config("random", tmp_path, num_prompts=200, input_len=100,
                                        range_ratio=0.5), text)
    lengths = [text.count(c.turns[0].user_text) for c in convs]
    assert min(lengths) >= 50 and max(lengths) <= 150
    assert len(set(lengths)) > 20
    exact = build_conversations(_config("random", tmp_path, input_len=33), text)
    assert {text.count(c.turns[0].user_text) for c in exact} == {33}
    assert {c.turns[0].output_len for c in exact} == {5}


def test_shared_prefix_groups(tmp_path: Path) -> None:
    text = PromptText()
    convs = build_conversations(_config("shared-prefix", tmp_path), text)
    assert len(convs) == 12
    per_system = Counter(c.system_text for c in convs)
    assert len(per_system) == 3 and set(per_system.values()) == {4}
    assert all(text.count(s or "") == 40 for s in per_system)
    assert all(text.count(c.turns[0].user_text) == 6 for c in convs)
    # shuffled: the first four requests are not all one group
    assert len({c.system_text for c in convs[:4]}) > 1


def test_multi_turn_sessions(tmp_path: Path) -> None:
    convs = build_conversations(_config("multi-turn", tmp_path), PromptText())
    assert len(convs) == 3
    assert all(len(c.turns) == 2 for c in convs)
    assert len({c.session_id for c in convs}) == 3


@pytest.mark.parametrize("jsonl", [False, True])
def test_sharegpt_reads_json_and_jsonl_and_filters(tmp_path: Path, jsonl: bool) -> None:
    path = _sharegpt_file(tmp_path, jsonl=jsonl)
    config = _config("sharegpt", tmp_path, dataset_path=path, num_prompts=30)
    convs = build_conversations(config, PromptText())
    assert len(convs) == 30
    prompts = {c.turns[0].user_text for c in convs}
    assert "hi" not in prompts and "one two three four" not in prompts
    by_prompt = {c.turns[0].user_text: c.turns[0].output_len for c in convs}
    assert by_prompt[" ".join(f"q3w{j}" for j in range(8))] == 4 + 3


def test_sharegpt_too_few_is_a_clear_error(tmp_path: Path) -> None:
    config = _config("sharegpt", tmp_path, num_prompts=31)
    with pytest.raises(ConfigError, match="30 usable"):
        build_conversations(config, PromptText())


def test_sharegpt_needs_dataset_path() -> None:
    with pytest.raises(ConfigError, match="dataset-path"):
        BenchConfig(workload="sharegpt")


def test_warmup_is_separate_from_measured_prompts(tmp_path: Path) -> None:
    text = PromptText()
    config = _config("random", tmp_path, warmup=3)
    warm = build_warmup(config, text)
    assert len(warm) == 3
    measured = {c.turns[0].user_text for c in build_conversations(config, text)}
    assert not measured & {c.turns[0].user_text for c in warm}
    # changing --warmup does not change the measured prompts
    assert build_conversations(_config("random", tmp_path, warmup=9), text) == \
        build_conversations(config, text)


def test_arrivals_reproducible() -> None:
    config = BenchConfig(request_rate=5.0, seed=3)
    assert build_arrivals(config, 50) == build_arrivals(config, 50)
    assert build_arrivals(config, 50) != build_arrivals(BenchConfig(request_rate=5.0, seed=4), 50)


def test_unknown_workload_lists_valid() -> None:
    with pytest.raises(KeyError, match="shared-prefix"):
        get_workload("nope")
